//! rvoip-controlplane: everything that reasons about SIP above the wire.
//!
//! Owns: admission policy, (to come) transactions, dialogs, proxy, B2BUA,
//! registrar, auth, SBC policy, CDRs and the state store; and the `rvoip`
//! binary with its subcommands.
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
