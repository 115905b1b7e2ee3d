//! The guests compiled into the binary (built from `guests/` by build.rs).

include!(concat!(env!("OUT_DIR"), "/builtin_guests.rs"));

/// The component bytes of a built-in guest, by name.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// Names of the built-in guests, for help and error messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// Directory holding every guest component the build produced, test-only guests included.
/// Only meaningful on the machine that built this binary.
pub const WASM_DIR: &str = env!("SOCKBOX_GUEST_WASM_DIR");
