//! The registrar (RFC 3261 §10.3) with digest authentication and a
//! persistent location service.

pub mod digest;
pub mod guard;
pub mod location;

use std::collections::HashMap;
use std::path::Path;

use rvoip_dataplane::sip::{Contact, HeaderName, SipMessage};
use serde::Deserialize;

use digest::{Authenticated, Secret};
use location::{Binding, LocationService, SharedLocation};

/// Registrar policy.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shortest registration accepted, seconds (423 below it).
    pub min_expires: u32,
    /// Longest registration granted, seconds.
    pub max_expires: u32,
    /// Registration time when the request names none, seconds.
    pub default_expires: u32,
    /// Hosts (this element's addresses) that stand for `domain` in an
    /// address-of-record: `sip:bob@192.0.2.1` is `bob@<domain>`.
    pub host_aliases: Vec<String>,
    /// The domain the aliases stand for.
    pub domain: Option<String>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            host_aliases: Vec::new(),
            domain: None,
        }
    }
}

/// The users file: `[[user]] name = "alice" password = "alicepw"` (or
/// `ha1_md5` / `ha1_sha256` instead of the password).
#[derive(Debug, Clone, Default)]
pub struct Users {
    map: HashMap<String, Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: Option<String>,
    ha1_md5: Option<String>,
    ha1_sha256: Option<String>,
}

/// Why a users file cannot be used.
#[derive(Debug)]
pub enum UsersError {
    /// It cannot be read.
    Read(std::path::PathBuf, std::io::Error),
    /// It is not a users file (TOML syntax, unknown keys); the parser's
    /// words.
    Syntax(String),
    /// User `.0` (`.1`) has neither a password nor an HA1, or both.
    Secret(usize, String),
    /// User `.0` (`.1`) is listed again.
    Twice(usize, String),
    /// What is wrong, in the file at this path.
    In(std::path::PathBuf, Box<UsersError>),
}

impl std::fmt::Display for UsersError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsersError::Read(p, e) => write!(f, "{}: cannot read: {e}", p.display()),
            UsersError::Syntax(e) => f.write_str(e),
            UsersError::Secret(i, name) => write!(
                f,
                "user[{i}] ({name}): give either password or ha1_md5/ha1_sha256"
            ),
            UsersError::Twice(i, name) => write!(f, "user[{i}]: {name} is listed twice"),
            UsersError::In(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for UsersError {}

impl Users {
    /// Loads a users file.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| UsersError::Read(path.to_path_buf(), e))?;
        Users::parse(&text).map_err(|e| UsersError::In(path.to_path_buf(), Box::new(e)))
    }

    /// Parses users-file text.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let f: UsersFile = toml::from_str(text).map_err(|e| UsersError::Syntax(e.to_string()))?;
        let mut map = HashMap::new();
        for (i, u) in f.user.into_iter().enumerate() {
            let secret = match (u.password, u.ha1_md5, u.ha1_sha256) {
                (Some(p), None, None) => Secret::Password(p),
                (None, md5, sha256) if md5.is_some() || sha256.is_some() => {
                    Secret::Ha1 { md5, sha256 }
                }
                _ => return Err(UsersError::Secret(i, u.name)),
            };
            if map.insert(u.name.clone(), secret).is_some() {
                return Err(UsersError::Twice(i, u.name));
            }
        }
        Ok(Users { map })
    }

    /// A user's secret.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.map.get(name).cloned()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What to answer a REGISTER with.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterOutcome {
    /// 200 OK listing the current bindings (`Contact` values) and echoing `Path`.
    Ok {
        /// `Contact` header values with their remaining `expires`.
        contacts: Vec<String>,
        /// `Path` values to echo (RFC 3327 §5.3).
        path: Vec<String>,
    },
    /// An error response.
    Reject {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: &'static str,
        /// Extra header, such as `Min-Expires` with 423.
        extra: Option<(HeaderName, String)>,
    },
}

fn reject(status: u16, reason: &'static str) -> RegisterOutcome {
    RegisterOutcome::Reject {
        status,
        reason,
        extra: None,
    }
}

/// The canonical address-of-record of a SIP URI: unescaped user, lower-case host.
pub fn aor_of(uri: &rvoip_dataplane::sip::Uri<'_>) -> Option<String> {
    let host = uri.host_bytes();
    if host.is_empty() {
        return None;
    }
    let mut user = Vec::new();
    uri.user_unescaped(&mut user);
    let user = String::from_utf8_lossy(&user);
    let host = String::from_utf8_lossy(host);
    let mut aor = String::with_capacity(user.len() + 1 + host.len());
    if !user.is_empty() {
        aor.push_str(&user);
        aor.push('@');
    }
    let at = aor.len();
    aor.push_str(&host);
    aor[at..].make_ascii_lowercase();
    Some(aor)
}

/// The form of a contact URI two bindings are compared by (RFC 3261 §19.1.4,
/// simplified: scheme, user and host compared case-insensitively where the
/// RFC says so, parameters as written).
fn contact_key(uri: &str) -> String {
    match uri.split_once('@') {
        Some((user, rest)) => format!(
            "{}@{}",
            user.to_ascii_lowercase(),
            rest.to_ascii_lowercase()
        ),
        None => uri.to_ascii_lowercase(),
    }
}

/// The registrar. Cloned, it is the same registrar (one location service)
/// for another control-plane shard.
#[derive(Debug, Clone)]
pub struct Registrar {
    config: RegistrarConfig,
    /// The location service.
    pub location: SharedLocation,
}

impl Registrar {
    /// A registrar over `location`.
    pub fn new(config: RegistrarConfig, location: LocationService) -> Self {
        Registrar {
            config,
            location: SharedLocation::new(location),
        }
    }

    /// The address-of-record `uri` names, with this element's own addresses
    /// standing for its domain.
    pub fn aor(&self, uri: &rvoip_dataplane::sip::Uri<'_>) -> Option<String> {
        let aor = aor_of(uri)?;
        if let Some(domain) = &self.config.domain {
            let (user, host) = match aor.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, aor.as_str()),
            };
            if self.config.host_aliases.iter().any(|a| a == host) {
                return Some(match user {
                    Some(u) => format!("{u}@{domain}"),
                    None => domain.clone(),
                });
            }
        }
        Some(aor)
    }

    /// Processes a REGISTER whose Request-URI names a domain this registrar
    /// serves (RFC 3261 §10.3 steps 4–8). `auth` is the proof of
    /// authentication when authentication is required. Changes become durable
    /// at the next [`LocationService::commit`]; send the response after it.
    pub fn register(
        &mut self,
        msg: &SipMessage<'_>,
        now_unix_ms: u64,
        source: &str,
        auth: Option<&Authenticated>,
    ) -> RegisterOutcome {
        let Ok(to) = msg.to() else {
            return reject(400, "Bad To");
        };
        if !to.uri.is_sip() {
            return reject(400, "To is not a SIP URI");
        }
        let Some(aor) = self.aor(&to.uri) else {
            return reject(400, "Bad To");
        };
        // §10.3 step 4: the authenticated user may only register its own AOR.
        if let Some(a) = auth {
            let mut user = Vec::new();
            to.uri.user_unescaped(&mut user);
            if user != a.user().as_bytes() {
                return reject(403, "Forbidden");
            }
        }
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return reject(400, "Bad Request");
        };
        let call_id = String::from_utf8_lossy(call_id).into_owned();
        let header_expires = msg.expires().ok().flatten();
        let path: Vec<String> = msg
            .paths()
            .filter_map(Result::ok)
            .map(|p| String::from_utf8_lossy(p.uri.as_bytes()).into_owned())
            .collect();
        // Held to the end: another shard's REGISTER for the same AOR
        // waits rather than interleaves.
        let mut location = self.location.lock();
        let mut list = location.all(&aor).to_vec();
        let mut contacts = Vec::new();
        for c in msg.contacts() {
            match c {
                Ok(Contact::Star) => {
                    // §10.3 step 6: '*' with Expires 0 (checked at admission)
                    // removes every binding not newer than this request.
                    list.retain(|b| b.call_id == call_id && b.cseq >= cseq.seq);
                }
                Ok(Contact::Addr(a)) => contacts.push(a),
                Err(_) => return reject(400, "Bad Contact"),
            }
        }
        for c in &contacts {
            let contact = String::from_utf8_lossy(c.uri.as_bytes()).into_owned();
            let expires = c
                .params
                .get("expires")
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .map(|v| v.min(u64::from(u32::MAX)) as u32)
                .or(header_expires)
                .unwrap_or(self.config.default_expires);
            if expires != 0 && expires < self.config.min_expires {
                return RegisterOutcome::Reject {
                    status: 423,
                    reason: "Interval Too Brief",
                    extra: Some((HeaderName::MinExpires, self.config.min_expires.to_string())),
                };
            }
            let expires = expires.min(self.config.max_expires);
            let q = c
                .params
                .get("q")
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<f32>().ok())
                .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
            let key = contact_key(&contact);
            if let Some(existing) = list.iter().find(|b| contact_key(&b.contact) == key) {
                // §10.3 step 7: same Call-ID needs a higher CSeq.
                if existing.call_id == call_id && cseq.seq <= existing.cseq {
                    return reject(400, "Out-of-order CSeq for this binding");
                }
            }
            list.retain(|b| contact_key(&b.contact) != key);
            if expires > 0 {
                list.push(Binding {
                    contact,
                    expires_at: now_unix_ms + u64::from(expires) * 1000,
                    q,
                    call_id: call_id.clone(),
                    cseq: cseq.seq,
                    path: path.clone(),
                    source: source.to_string(),
                });
            }
        }
        location.set(&aor, list, now_unix_ms);
        let contacts = location
            .lookup(&aor, now_unix_ms)
            .iter()
            .map(|b| {
                format!(
                    "<{}>;expires={}",
                    b.contact,
                    (b.expires_at.saturating_sub(now_unix_ms)).div_ceil(1000)
                )
            })
            .collect();
        RegisterOutcome::Ok { contacts, path }
    }
}

#[cfg(test)]
mod tests;
