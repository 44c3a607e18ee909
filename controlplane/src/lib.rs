//! rvoip-controlplane: everything that reasons about SIP above the wire.
//!
//! Owns, layer by layer: RFC 3261 transactions ([`transaction`]); the SIP
//! element that drives them and hands requests to the transaction user
//! chosen at start ([`element`]); dialogs for every user agent ([`dialog`]);
//! the transaction users: the stateful and
//! stateless proxy ([`proxy`]) and the B2BUA ([`b2bua`]); the registrar,
//! digest authentication, the password-guessing guard and the location
//! store ([`registrar`]); SBC policy, the B2BUA's side of the typed media
//! orders (built, sent over the order channel, outcomes read), CDRs and the
//! dialog journal ([`sbc`]); RFC 3263 name resolution ([`dns`]: the
//! procedure and cache sans-IO, its resolver thread an I/O shell);
//! admission ([`admission`]); `sip lint`
//! ([`lint`]); the control-plane process ([`process`]) and the `rvoip`
//! binary.
//!
//! Must not: touch sockets or packets directly (messages reach it as bytes
//! through the dataplane and leave the same way; the one exception is
//! [`dns::client`], whose thread asks name servers); read the clock or the
//! system's randomness outside its I/O shells ([`process`], the binary):
//! the cores take both as inputs.

pub mod admission;
pub mod b2bua;
pub mod build;
pub mod dialog;
pub mod dns;
pub mod element;
pub mod lint;
pub mod ops;
pub mod process;
pub mod proxy;
pub mod registrar;
pub mod sbc;
pub mod transaction;
