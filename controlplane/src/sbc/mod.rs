//! The SBC: policy (realms, routing, dispatcher, limits), media orders to
//! the relay, CDRs and the dialog journal. The B2BUA itself lives in the SIP
//! core (`core::b2bua`), which uses these.

pub mod cdr;
pub mod journal;
pub mod media;
pub mod policy;
