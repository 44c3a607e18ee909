//! rvoip-loadtest: the 10k-call SIP+RTP load generator and its reports.
//!
//! Owns: UAC and UAS roles, call scenarios, RTP streams with transit-time
//! stamps, hdrhistogram reports. Uses the dataplane's wire formats.
//!
//! Nothing is implemented yet; see `docs/FEATURES.md`.
