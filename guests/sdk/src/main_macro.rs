//! `main!`: a guest's entry point, written once for both worlds.
//!
//! A WASI 0.2 guest is a binary whose `main` blocks in [`crate::run`]; a WASI 0.3 guest is a
//! `cdylib` exporting `wasi:cli/run@0.3`, an async function, and has no `main` at all. The
//! macro expands to whichever the SDK was built for, so one source file serves both: the
//! guest's 0.2 crate uses it as `src/main.rs`, its 0.3 crate as the `cdylib`'s root.

/// Declares the guest's entry point: `main` runs `$main` (a future of `Result<(), E>`, `E:
/// Display`) on the SDK's runtime, as [`crate::run`] does. For WASI 0.2 this is `fn main`; with
/// the SDK's `p3` feature it is the export of `wasi:cli/run@0.3`.
///
/// ```ignore
/// sockbox_guest::main!(serve_udp(|datagram| datagram));
/// ```
#[cfg(not(feature = "p3"))]
#[macro_export]
macro_rules! main {
    ($main:expr) => {
        fn main() -> ::std::process::ExitCode {
            $crate::run($main)
        }
    };
}

/// Declares the guest's entry point: `main` runs `$main` (a future of `Result<(), E>`, `E:
/// Display`) on the SDK's runtime, as [`crate::run`] does. For WASI 0.2 this is `fn main`; with
/// the SDK's `p3` feature it is the export of `wasi:cli/run@0.3`.
///
/// ```ignore
/// sockbox_guest::main!(serve_udp(|datagram| datagram));
/// ```
#[cfg(feature = "p3")]
#[macro_export]
macro_rules! main {
    ($main:expr) => {
        #[doc(hidden)]
        struct __SockboxGuestMain;

        impl $crate::__p3::RunGuest for __SockboxGuestMain {
            async fn run() -> ::std::result::Result<(), ()> {
                match $crate::run($main).await {
                    code if code == ::std::process::ExitCode::SUCCESS => Ok(()),
                    _ => Err(()),
                }
            }
        }

        $crate::__p3::export_run!(__SockboxGuestMain);
    };
}

/// What [`main!`] expands to for WASI 0.3, reachable through `$crate` from the guest's crate
/// (which depends on the SDK only).
#[cfg(feature = "p3")]
#[doc(hidden)]
pub mod p3 {
    pub use wasip3::cli::command::export as export_run;
    pub use wasip3::exports::cli::run::Guest as RunGuest;
}
