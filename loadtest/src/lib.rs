//! rvoip-loadtest: the SIP+RTP load generator and its reports.
//!
//! Owns: the UAC and UAS call logic ([`agent`], sans-IO), the scenario's SIP
//! messages ([`sip`]), RTP streams with send-time stamps and their receive
//! statistics ([`media`]), hdrhistogram reports, JSON and an E-model MOS
//! ([`report`]), and the socket loop around an agent ([`run`]).
//!
//! Must not: need anything of the peer but SIP over UDP and RTP; block on
//! anything but its own sockets.

pub mod agent;
pub mod batch;
pub mod media;
pub mod report;
pub mod run;
pub mod sip;
pub mod uring;
