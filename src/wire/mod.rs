//! Floor 1 — the wire format: what a WebSocket frame looks like in bytes.
//!
//! Pure functions and small state machines with no I/O and no knowledge of clients,
//! shards or HTTP: encoding a server frame once ([`frame`]), compressing it once and
//! inflating what clients compressed ([`deflate`], permessage-deflate), choosing the
//! permessage-deflate offer to accept ([`extensions`]), following client frame
//! boundaries through a byte stream (`bounds`) and the JSON of client protocol v1
//! ([`v1`]). Every other floor builds on this one; this one imports nothing from them.

pub(crate) mod bounds;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod v1;
