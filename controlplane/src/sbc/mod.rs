//! The SBC: policy (realms, routing, dispatcher, limits), media orders to
//! the relay, CDRs and the dialog journal, used by the B2BUA
//! ([`crate::b2bua`]), the transaction user that is the SBC.

pub mod cdr;
pub mod journal;
pub mod media;
pub mod policy;
