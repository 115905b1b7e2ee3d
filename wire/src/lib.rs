//! The wire formats the built-in guests speak, as pure code over bytes.
//!
//! Sockets only appear at the edges (the guest SDK and the native clients); everything here
//! is a decoder fed whatever bytes arrived — split frames, glued frames ("sticky packets") —
//! and asked for the next whole message. Shared by guests (wasm32-wasip2) and the host's
//! native clients, so both sides agree byte for byte.

mod frame;
mod line;

pub use frame::{
    DEFAULT_MAX_FRAME, FrameDecoder, FrameError, HEADER_LEN, encode_frame, frame_header,
};
pub use line::{DEFAULT_MAX_LINE, LineDecoder, LineError};
