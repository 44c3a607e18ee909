//! The resolver's I/O shell: RFC 3263 resolutions run on a thread of their
//! own, over hickory-resolver (a maintained stub resolver: UDP with TCP
//! fallback, server rotation, timeouts and retries), so the control plane
//! hands over a query and picks the answer up later without ever waiting.
#![allow(clippy::disallowed_methods)]

use std::io;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use rvoip_tuning::dns::DnsConfig;

use super::rfc3263::{LookupError, Lookups, Naptr, Records, Srv};
use super::{Answer, Query};

/// The resolver thread, as the control plane sees it.
#[derive(Debug)]
pub struct DnsClient {
    queries: tokio::sync::mpsc::UnboundedSender<Query>,
    answers: mpsc::Receiver<Answer>,
}

impl DnsClient {
    /// Starts the thread with the servers of `[dns]` (none: the host's
    /// resolv.conf).
    pub fn start(config: &DnsConfig) -> io::Result<DnsClient> {
        let resolver = build(config)?;
        let (qtx, mut qrx) = tokio::sync::mpsc::unbounded_channel::<Query>();
        let (atx, arx) = mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("dns".into())
            .spawn(move || {
                rt.block_on(async move {
                    let shared = std::sync::Arc::new(Hickory(resolver));
                    while let Some(q) = qrx.recv().await {
                        let (dns, atx) = (std::sync::Arc::clone(&shared), atx.clone());
                        tokio::spawn(async move {
                            let result = super::rfc3263::resolve(&q.name, &*dns).await;
                            let (result, negative_ttl_secs) = match result {
                                Ok(r) => (Ok(r), None),
                                Err((f, ttl)) => (Err(f), ttl),
                            };
                            let _ = atx.send(Answer {
                                key: q.key,
                                result,
                                negative_ttl_secs,
                            });
                        });
                    }
                });
            })?;
        Ok(DnsClient {
            queries: qtx,
            answers: arx,
        })
    }

    /// Hands a resolution to the thread.
    pub fn submit(&self, q: Query) {
        let _ = self.queries.send(q);
    }

    /// A finished resolution, if one is ready.
    pub fn try_answer(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
    }
}

fn build(config: &DnsConfig) -> io::Result<TokioResolver> {
    let mut builder = if config.servers.is_empty() {
        TokioResolver::builder(TokioRuntimeProvider::default())
            .map_err(|e| io::Error::other(format!("/etc/resolv.conf: {e}")))?
    } else {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let o: &mut ResolverOpts = builder.options_mut();
    o.timeout = Duration::from_millis(u64::from(config.timeout_ms));
    o.attempts = 2;
    // rvoip keeps whole resolutions with their TTLs; the records under
    // them are not kept twice.
    o.cache_size = 0;
    o.ndots = 0;
    builder
        .build()
        .map_err(|e| io::Error::other(format!("resolver: {e}")))
}

struct Hickory(TokioResolver);

fn lookup_error(e: NetError) -> LookupError {
    if e.is_nx_domain() {
        return LookupError::NoSuchName(negative_ttl(&e));
    }
    if e.is_no_records_found() {
        return LookupError::NoRecords(negative_ttl(&e));
    }
    LookupError::Failed(e.to_string())
}

fn negative_ttl(e: &NetError) -> Option<u32> {
    match e {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(n)) => n.negative_ttl,
        _ => None,
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

impl Hickory {
    async fn records(&self, name: &str, t: RecordType) -> Result<(Vec<RData>, u32), LookupError> {
        let l = self.0.lookup(fqdn(name), t).await.map_err(lookup_error)?;
        let mut ttl = u32::MAX;
        let mut out = Vec::new();
        for r in l.answers() {
            if r.record_type() == t || (t == RecordType::A && r.record_type() == RecordType::AAAA) {
                ttl = ttl.min(r.ttl);
                out.push(r.data.clone());
            }
        }
        if out.is_empty() {
            return Err(LookupError::NoRecords(None));
        }
        Ok((out, ttl))
    }
}

impl Lookups for Hickory {
    async fn naptr(&self, name: &str) -> Result<Records<Naptr>, LookupError> {
        let (rs, ttl) = self.records(name, RecordType::NAPTR).await?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let out = rs
            .into_iter()
            .filter_map(|r| match r {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: text(&n.flags),
                    service: text(&n.services),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        Ok((out, ttl))
    }

    async fn srv(&self, name: &str) -> Result<Records<Srv>, LookupError> {
        let (rs, ttl) = self.records(name, RecordType::SRV).await?;
        let out = rs
            .into_iter()
            .filter_map(|r| match r {
                RData::SRV(s) => Some(Srv {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                }),
                _ => None,
            })
            .collect();
        Ok((out, ttl))
    }

    async fn ips(&self, name: &str) -> Result<Records<IpAddr>, LookupError> {
        // Both families, whichever the name has (a peer of the other family
        // than its realm is left out where it is used).
        let (v4, v6) = tokio::join!(
            self.records(name, RecordType::A),
            self.records(name, RecordType::AAAA)
        );
        let mut ips = Vec::new();
        let mut ttl = u32::MAX;
        let mut first_err = None;
        for r in [v4, v6] {
            match r {
                Ok((rs, t)) => {
                    ttl = ttl.min(t);
                    ips.extend(rs.into_iter().filter_map(|d| match d {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (ips.is_empty(), first_err) {
            (false, _) => Ok((ips, ttl)),
            (true, Some(e)) => Err(e),
            (true, None) => Err(LookupError::NoRecords(None)),
        }
    }
}
