//! rvoip-controlplane: everything that reasons about SIP above the wire.
//!
//! Owns: RFC 3261 transactions ([`transaction`]); the SIP core with the
//! stateful and stateless proxy and the B2BUA ([`core`]); the registrar,
//! digest authentication, the password-guessing guard and the location
//! store ([`registrar`]); SBC policy, media orders, CDRs and the dialog
//! journal ([`sbc`]); admission ([`admission`]); `sip lint` ([`lint`]); the
//! control-plane process ([`process`]) and the `rvoip` binary.
//!
//! Must not: touch sockets or packets directly. Messages reach it as bytes
//! through the dataplane and leave the same way.

pub mod admission;
pub mod core;
pub mod lint;
pub mod process;
pub mod registrar;
pub mod sbc;
pub mod transaction;
