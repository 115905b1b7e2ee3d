//! The guests compiled into the binary (built from `guests/` by build.rs), so `sockbox run echo`
//! needs no file next to the binary and nothing at run time names a path of the build machine.

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
