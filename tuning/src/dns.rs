//! `[dns]`: where SIP names are resolved (RFC 3263) and how long answers
//! and failed peers are remembered.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[dns]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers asked, in order (empty: the host's `/etc/resolv.conf`).
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// How long a peer that timed out, answered 503 or could not be reached
    /// is tried last (RFC 3263 §4.3 failover; a peer that answers a health
    /// check is taken back at once).
    #[serde(default = "default_avoid_secs")]
    pub avoid_secs: u32,
    /// Names whose resolutions are kept (positive and negative).
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Resolutions in flight at once; a request beyond it fails at once
    /// (503) instead of queueing without bound.
    #[serde(default = "default_max_outstanding")]
    pub max_outstanding: usize,
    /// How long one query waits for a server before the next is asked.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Upper bound on how long a failed resolution (NXDOMAIN, no records:
    /// RFC 2308) is remembered; the zone's SOA gives the exact time.
    #[serde(default = "default_negative_secs")]
    pub negative_max_secs: u32,
}

fn default_avoid_secs() -> u32 {
    60
}

fn default_cache_entries() -> usize {
    10_000
}

fn default_max_outstanding() -> usize {
    256
}

fn default_timeout_ms() -> u32 {
    2000
}

fn default_negative_secs() -> u32 {
    300
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            avoid_secs: default_avoid_secs(),
            cache_entries: default_cache_entries(),
            max_outstanding: default_max_outstanding(),
            timeout_ms: default_timeout_ms(),
            negative_max_secs: default_negative_secs(),
        }
    }
}

impl DnsConfig {
    /// What is wrong, as (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, s) in self.servers.iter().enumerate() {
            if s.port() == 0 || s.ip().is_unspecified() {
                return Err((
                    format!("dns.servers[{i}]"),
                    format!("{s} is not a name server address"),
                ));
            }
        }
        if self.cache_entries == 0 {
            return Err(("dns.cache_entries".into(), "must be at least 1".into()));
        }
        if self.max_outstanding == 0 {
            return Err(("dns.max_outstanding".into(), "must be at least 1".into()));
        }
        if !(100..=30_000).contains(&self.timeout_ms) {
            return Err((
                "dns.timeout_ms".into(),
                "must be between 100 and 30000".into(),
            ));
        }
        Ok(())
    }
}

/// Whether `uri` is a SIP or SIPS URI with a host: `sip:NAME`,
/// `sips:NAME:5061`, `sip:NAME;transport=tcp`. The control plane parses it
/// fully; this only catches what is plainly not one.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .ok_or_else(|| format!("{uri:?} is not a sip: or sips: URI"))?;
    let host = rest.rsplit('@').next().unwrap_or(rest);
    let host = host.split([';', '?']).next().unwrap_or(host);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_checked_and_mistakes_named() {
        assert!(check_uri("sip:trunk.rvoip.test").is_ok());
        assert!(check_uri("sips:carrier.example:5061;transport=tcp").is_ok());
        assert!(check_uri("http://x").unwrap_err().contains("not a sip"));
        assert!(check_uri("sip:").unwrap_err().contains("no host"));
        assert!(
            check_uri("sip:user@;transport=udp")
                .unwrap_err()
                .contains("no host")
        );
    }
}
