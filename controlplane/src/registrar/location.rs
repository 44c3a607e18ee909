//! The location service (RFC 3261 §10.3): bindings of address-of-record to
//! contacts, in memory for lookups and persisted in redb so a restart keeps
//! them. Writes are grouped: [`LocationService::commit`] makes every change
//! since the last commit durable in one transaction, and the registrar sends
//! its 200 OK responses only after that.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::element::Transport;

const BINDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bindings");

/// One contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// The contact URI.
    pub contact: String,
    /// Expiry, Unix milliseconds.
    pub expires_at: u64,
    /// Preference, q × 1000 (RFC 3261 §20.10).
    pub q: u16,
    /// Call-ID of the REGISTER that made it.
    pub call_id: String,
    /// CSeq of that REGISTER.
    pub cseq: u32,
    /// Path headers (RFC 3327), in order, to route requests to the contact.
    pub path: Vec<String>,
    /// Where the REGISTER came from (`transport:ip:port`, then `#conn`
    /// for a stream connection), for NAT traversal and to reach a client
    /// over the connection it opened ([`Source`]).
    pub source: String,
}

/// Where a REGISTER came from, as a binding keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The transport it came over.
    pub transport: Transport,
    /// The sender's address.
    pub address: SocketAddr,
    /// Its stream connection (none over UDP).
    pub conn: Option<u32>,
}

impl Source {
    /// `udp:192.0.2.1:5060`, `wss:192.0.2.1:50123#16777217`.
    pub fn text(&self) -> String {
        match self.conn {
            Some(c) => format!("{}:{}#{c}", self.transport.param(), self.address),
            None => format!("{}:{}", self.transport.param(), self.address),
        }
    }

    /// Reads [`Source::text`] (bindings stored before connections were
    /// kept read without one).
    pub fn parse(text: &str) -> Option<Source> {
        let (t, rest) = text.split_once(':')?;
        let (address, conn) = match rest.split_once('#') {
            Some((a, c)) => (a, Some(c.parse().ok()?)),
            None => (rest, None),
        };
        Some(Source {
            transport: Transport::from_param(t.as_bytes())?,
            address: address.parse().ok()?,
            conn,
        })
    }
}

/// Why the store failed.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "location store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// One location service shared by the control-plane shards: a REGISTER is
/// handled whole under its lock (read, change, write back), a lookup
/// copies the bindings out.
#[derive(Debug, Clone)]
pub struct SharedLocation(Arc<Mutex<LocationService>>);

impl SharedLocation {
    /// Shares `location`.
    pub fn new(location: LocationService) -> SharedLocation {
        SharedLocation(Arc::new(Mutex::new(location)))
    }

    /// The service, for one request's use (a shard that panicked holding
    /// it left it as it was: every change is whole).
    pub fn lock(&self) -> MutexGuard<'_, LocationService> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bindings per address-of-record.
#[derive(Debug)]
pub struct LocationService {
    db: Option<Database>,
    bindings: HashMap<String, Vec<Binding>>,
    dirty: Vec<String>,
}

impl LocationService {
    /// A service persisted in `path` (created if missing); bindings already
    /// stored there are loaded.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(store_err)?;
        }
        let db = Database::create(path).map_err(store_err)?;
        let mut bindings = HashMap::new();
        {
            let tx = db.begin_write().map_err(store_err)?;
            tx.open_table(BINDINGS).map_err(store_err)?;
            tx.commit().map_err(store_err)?;
        }
        let read = db.begin_read().map_err(store_err)?;
        let table = read.open_table(BINDINGS).map_err(store_err)?;
        for entry in table.iter().map_err(store_err)? {
            let (k, v) = entry.map_err(store_err)?;
            if let Ok(list) = serde_json::from_slice::<Vec<Binding>>(v.value()) {
                bindings.insert(k.value().to_string(), list);
            }
        }
        Ok(LocationService {
            db: Some(db),
            bindings,
            dirty: Vec::new(),
        })
    }

    /// A service kept in memory only (tests, or when persistence is off).
    pub fn in_memory() -> Self {
        LocationService {
            db: None,
            bindings: HashMap::new(),
            dirty: Vec::new(),
        }
    }

    /// The live bindings of `aor` at `now_ms`, best q first.
    pub fn lookup(&self, aor: &str, now_ms: u64) -> Vec<Binding> {
        let mut list: Vec<Binding> = self
            .bindings
            .get(aor)
            .map(|l| {
                l.iter()
                    .filter(|b| b.expires_at > now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        list.sort_by_key(|b| std::cmp::Reverse(b.q));
        list
    }

    /// Whether no address of record has a binding (expired ones count).
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Every binding of `aor`, expired ones included.
    pub fn all(&self, aor: &str) -> &[Binding] {
        self.bindings.get(aor).map_or(&[], Vec::as_slice)
    }

    /// Replaces the bindings of `aor`; written at the next commit.
    pub fn set(&mut self, aor: &str, mut list: Vec<Binding>, now_ms: u64) {
        list.retain(|b| b.expires_at > now_ms);
        if list.is_empty() {
            self.bindings.remove(aor);
        } else {
            self.bindings.insert(aor.to_string(), list);
        }
        if !self.dirty.iter().any(|d| d == aor) {
            self.dirty.push(aor.to_string());
        }
    }

    /// Makes every change since the last commit durable, in one transaction.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            self.dirty.clear();
            return Ok(());
        };
        if self.dirty.is_empty() {
            return Ok(());
        }
        let tx = db.begin_write().map_err(store_err)?;
        {
            let mut table = tx.open_table(BINDINGS).map_err(store_err)?;
            for aor in &self.dirty {
                match self.bindings.get(aor) {
                    Some(list) => {
                        let value = serde_json::to_vec(list).map_err(store_err)?;
                        table
                            .insert(aor.as_str(), value.as_slice())
                            .map_err(store_err)?;
                    }
                    None => {
                        table.remove(aor.as_str()).map_err(store_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(store_err)?;
        self.dirty.clear();
        Ok(())
    }

    /// Drops expired bindings (they are already invisible to lookups).
    pub fn purge(&mut self, now_ms: u64) {
        let expired: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, l)| l.iter().any(|b| b.expires_at <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for aor in expired {
            let list = self.bindings.get(&aor).cloned().unwrap_or_default();
            self.set(&aor, list, now_ms);
        }
    }

    /// Addresses-of-record with live bindings.
    pub fn count(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, expires_at: u64, q: u16) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at,
            q,
            call_id: "c".into(),
            cseq: 1,
            path: vec![],
            source: "udp:127.0.0.1:5080".into(),
        }
    }

    #[test]
    fn bindings_survive_a_restart() {
        let path = std::env::temp_dir().join(format!("rvoip-loc-{}.redb", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let mut loc = LocationService::open(&path).unwrap_or_else(|e| panic!("{e}"));
            loc.set(
                "alice@rvoip.test",
                vec![
                    binding("sip:alice@10.0.0.1", 10_000, 500),
                    binding("sip:alice@10.0.0.2", 10_000, 1000),
                ],
                0,
            );
            loc.set(
                "bob@rvoip.test",
                vec![binding("sip:bob@10.0.0.3", 5_000, 1000)],
                0,
            );
            loc.commit().unwrap_or_else(|e| panic!("{e}"));
            loc.set("bob@rvoip.test", vec![], 0);
            loc.commit().unwrap_or_else(|e| panic!("{e}"));
        }
        let loc = LocationService::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let alice = loc.lookup("alice@rvoip.test", 1_000);
        assert_eq!(
            alice.iter().map(|b| b.contact.as_str()).collect::<Vec<_>>(),
            ["sip:alice@10.0.0.2", "sip:alice@10.0.0.1"],
            "best q first"
        );
        assert!(
            loc.lookup("bob@rvoip.test", 1_000).is_empty(),
            "removal persisted"
        );
        assert!(
            loc.lookup("alice@rvoip.test", 20_000).is_empty(),
            "expired bindings are not returned"
        );
        let _ = std::fs::remove_file(&path);
    }
}
