//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760):
//! MD5 and SHA-256, `qop=auth`, stateless nonces with a lifetime, `stale=true`
//! for expired nonces, and a nonce-count replay check.
//!
//! Nonces are `base64(issued_ms ‖ HMAC-SHA256(secret, issued_ms ‖ realm))`:
//! verifying one needs no state. The only state is the highest nonce-count
//! seen per nonce, kept while the nonce lives, so a replayed response fails.

use std::collections::HashMap;
use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::Digest as _;
use ring::hmac;
use rvoip_dataplane::entropy::Entropy;

use crate::transaction::Millis;

/// Digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 3261; the one SIPp 3.6 answers).
    Md5,
    /// SHA-256 (RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The `algorithm=` token.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn from_token(t: &[u8]) -> Option<Algorithm> {
        if t.eq_ignore_ascii_case(b"MD5") {
            Some(Algorithm::Md5)
        } else if t.eq_ignore_ascii_case(b"SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        let bytes: Vec<u8> = match self {
            Algorithm::Md5 => md5::Md5::digest(data).to_vec(),
            Algorithm::Sha256 => ring::digest::digest(&ring::digest::SHA256, data)
                .as_ref()
                .to_vec(),
        };
        bytes
            .iter()
            .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// The parameters of a `Digest` Authorization header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `username`
    pub username: String,
    /// `realm`
    pub realm: String,
    /// `nonce`
    pub nonce: String,
    /// `uri`
    pub uri: String,
    /// `response`
    pub response: String,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Option<String>,
    /// `cnonce`
    pub cnonce: Option<String>,
    /// `qop`
    pub qop: Option<String>,
    /// `nc`
    pub nc: Option<String>,
    /// `opaque`
    pub opaque: Option<String>,
}

/// Parses the parameters after `Digest` (comma-separated `name=value`,
/// values tokens or quoted strings). None when malformed.
pub fn parse_credentials(params: &[u8]) -> Option<Credentials> {
    let c = parse_params(params)?;
    (!c.username.is_empty() && !c.nonce.is_empty() && !c.response.is_empty()).then_some(c)
}

/// The answer of a client to a `Digest` challenge (the value of a
/// WWW-Authenticate or Proxy-Authenticate header): the value for its
/// Authorization or Proxy-Authorization header (RFC 7616 §3.4.1; `qop=auth`
/// when offered, else the RFC 2617 form). None for a malformed challenge or
/// an algorithm other than MD5 and SHA-256.
#[allow(clippy::too_many_arguments)]
pub fn answer_challenge(
    challenge: &[u8],
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Option<String> {
    let rest = challenge.trim_ascii_start();
    let params = rest
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case(b"Digest"))
        .map(|_| &rest[6..])?;
    let c = parse_params(params)?;
    if c.nonce.is_empty() {
        return None;
    }
    let alg = match &c.algorithm {
        Some(a) => Algorithm::from_token(a.as_bytes())?,
        None => Algorithm::Md5,
    };
    let ha1 = alg.hex(format!("{user}:{}:{password}", c.realm).as_bytes());
    let ha2 = alg.hex(format!("{method}:{uri}").as_bytes());
    let auth = c
        .qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
    let mut out = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
        c.realm,
        c.nonce,
        alg.token()
    );
    let response = if auth {
        let nc = format!("{nc:08x}");
        let _ = write!(out, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
        alg.hex(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce).as_bytes())
    } else {
        alg.hex(format!("{ha1}:{}:{ha2}", c.nonce).as_bytes())
    };
    let _ = write!(out, ", response=\"{response}\"");
    if let Some(o) = &c.opaque {
        let _ = write!(out, ", opaque=\"{o}\"");
    }
    Some(out)
}

/// The `name=value` parameters of a Digest header, as far as they parse.
fn parse_params(params: &[u8]) -> Option<Credentials> {
    let mut c = Credentials::default();
    let mut rest = params;
    loop {
        let trimmed = rest.trim_ascii_start();
        if trimmed.is_empty() {
            break;
        }
        let eq = trimmed.iter().position(|b| *b == b'=')?;
        let name = trimmed[..eq].trim_ascii();
        let after = trimmed[eq + 1..].trim_ascii_start();
        let (value, next): (Vec<u8>, &[u8]) = if after.first() == Some(&b'"') {
            let mut v = Vec::new();
            let mut i = 1;
            loop {
                match after.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        v.push(*after.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        v.push(*b);
                        i += 1;
                    }
                }
            }
            (v, &after[i + 1..])
        } else {
            let end = after.iter().position(|b| *b == b',').unwrap_or(after.len());
            (after[..end].trim_ascii().to_vec(), &after[end..])
        };
        let value = String::from_utf8(value).ok()?;
        match name.to_ascii_lowercase().as_slice() {
            b"username" => c.username = value,
            b"realm" => c.realm = value,
            b"nonce" => c.nonce = value,
            b"uri" => c.uri = value,
            b"response" => c.response = value.to_ascii_lowercase(),
            b"algorithm" => c.algorithm = Some(value),
            b"cnonce" => c.cnonce = Some(value),
            b"qop" => c.qop = Some(value),
            b"nc" => c.nc = Some(value),
            b"opaque" => c.opaque = Some(value),
            _ => {}
        }
        let next = next.trim_ascii_start();
        rest = match next.first() {
            Some(b',') => &next[1..],
            None => next,
            Some(_) => return None,
        };
    }
    Some(c)
}

/// A user's secret: the password, or precomputed HA1 values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plain password.
    Password(String),
    /// HA1 = H(user:realm:password) per algorithm.
    Ha1 {
        /// MD5 HA1.
        md5: Option<String>,
        /// SHA-256 HA1.
        sha256: Option<String>,
    },
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No or unusable credentials: challenge.
    Missing,
    /// Wrong response, unknown user, or a replayed nonce-count: challenge again.
    Rejected,
    /// Correct, but the nonce has expired: challenge with `stale=true`.
    Stale,
}

/// Proof that a request was authenticated; only [`Authenticator::verify`]
/// makes one, so code that needs an authenticated user cannot skip the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    user: String,
}

impl Authenticated {
    /// The authenticated user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// Issues challenges and verifies credentials for one realm.
#[derive(Debug)]
pub struct Authenticator {
    realm: String,
    /// What is challenged with, in this order; answers in any other
    /// algorithm are not accepted.
    algorithms: Vec<Algorithm>,
    key: hmac::Key,
    lifetime_ms: Millis,
    /// Highest nonce-count seen per live nonce.
    counts: HashMap<String, (u32, Millis)>,
    /// Random per instance: nonces of an earlier run do not verify (their
    /// issue times are on another clock and their counts are forgotten).
    epoch: [u8; 8],
    /// Makes every nonce unique, also within one millisecond.
    serial: u64,
}

impl Authenticator {
    /// An authenticator for `realm` with a per-process `secret` and nonces
    /// valid for `lifetime_ms`, challenging with MD5 alone.
    pub fn new(realm: &str, secret: &[u8], lifetime_ms: Millis, entropy: &dyn Entropy) -> Self {
        Authenticator {
            realm: realm.to_string(),
            algorithms: vec![Algorithm::Md5],
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime_ms,
            counts: HashMap::new(),
            epoch: {
                let mut e = [0u8; 8];
                // Without randomness the epoch is fixed; nonces stay unique
                // by their serial.
                let _ = entropy.fill(&mut e);
                e
            },
            serial: 0,
        }
    }

    /// Challenges with `algorithms`, one challenge each, in this order
    /// (RFC 8760 §2.4); an empty list keeps the current one.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A nonce: issue time, serial, and an HMAC over both (with the epoch
    /// and realm), base64url.
    fn nonce_at(&self, issued: Millis, serial: u64) -> String {
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&self.epoch);
        msg.extend_from_slice(&issued.to_be_bytes());
        msg.extend_from_slice(&serial.to_be_bytes());
        msg.extend_from_slice(self.realm.as_bytes());
        let tag = hmac::sign(&self.key, &msg);
        let mut raw = Vec::with_capacity(32);
        raw.extend_from_slice(&issued.to_be_bytes());
        raw.extend_from_slice(&serial.to_be_bytes());
        raw.extend_from_slice(&tag.as_ref()[..16]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// When `nonce` was issued, if it is one of ours.
    fn issued(&self, nonce: &str) -> Option<Millis> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let issued = Millis::from_be_bytes(raw.get(..8)?.try_into().ok()?);
        let serial = u64::from_be_bytes(raw.get(8..16)?.try_into().ok()?);
        (self.nonce_at(issued, serial) == nonce).then_some(issued)
    }

    /// `WWW-Authenticate`/`Proxy-Authenticate` values to send: one
    /// challenge per configured algorithm, in the configured order (RFC 8760
    /// §2.4).
    pub fn challenges(&mut self, now: Millis, stale: bool) -> Vec<String> {
        self.serial += 1;
        let nonce = self.nonce_at(now, self.serial);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
                    self.realm,
                    a.token()
                )
            })
            .collect()
    }

    /// Verifies `creds` for `method`, looking the user up with `secret_of`.
    pub fn verify(
        &mut self,
        now: Millis,
        method: &[u8],
        creds: &Credentials,
        secret_of: impl Fn(&str) -> Option<Secret>,
    ) -> Result<Authenticated, AuthFailure> {
        if creds.realm != self.realm {
            return Err(AuthFailure::Missing);
        }
        let algorithm = match &creds.algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(a.as_bytes()).ok_or(AuthFailure::Missing)?,
        };
        // An answer in an algorithm this realm was not configured for is no
        // answer to its challenge.
        if !self.algorithms.contains(&algorithm) {
            return Err(AuthFailure::Missing);
        }
        let issued = self.issued(&creds.nonce).ok_or(AuthFailure::Rejected)?;
        let secret = secret_of(&creds.username).ok_or(AuthFailure::Rejected)?;
        let ha1 = match (secret, algorithm) {
            (Secret::Password(p), a) => {
                a.hex(format!("{}:{}:{p}", creds.username, self.realm).as_bytes())
            }
            (Secret::Ha1 { md5: Some(h), .. }, Algorithm::Md5) => h,
            (
                Secret::Ha1 {
                    sha256: Some(h), ..
                },
                Algorithm::Sha256,
            ) => h,
            _ => return Err(AuthFailure::Rejected),
        };
        let ha2 =
            algorithm.hex(format!("{}:{}", String::from_utf8_lossy(method), creds.uri).as_bytes());
        let expected = match (&creds.qop, &creds.nc, &creds.cnonce) {
            (Some(q), Some(nc), Some(cnonce)) if q.eq_ignore_ascii_case("auth") => {
                algorithm.hex(format!("{ha1}:{}:{nc}:{cnonce}:{q}:{ha2}", creds.nonce).as_bytes())
            }
            (None, _, _) => algorithm.hex(format!("{ha1}:{}:{ha2}", creds.nonce).as_bytes()),
            _ => return Err(AuthFailure::Rejected),
        };
        if expected != creds.response {
            return Err(AuthFailure::Rejected);
        }
        if now.saturating_sub(issued) > self.lifetime_ms {
            return Err(AuthFailure::Stale);
        }
        if let Some(nc) = &creds.nc {
            // RFC 7616 §3.4: each nonce-count may be used once, increasing.
            let n = u32::from_str_radix(nc, 16).map_err(|_| AuthFailure::Rejected)?;
            let entry = self
                .counts
                .entry(creds.nonce.clone())
                .or_insert((0, issued + self.lifetime_ms));
            if n <= entry.0 {
                return Err(AuthFailure::Rejected);
            }
            entry.0 = n;
        }
        self.counts.retain(|_, (_, until)| *until >= now);
        Ok(Authenticated {
            user: creds.username.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's answer, computed the way RFC 7616 §3.4.1 says.
    #[allow(clippy::too_many_arguments)]
    fn answer(
        a: Algorithm,
        user: &str,
        pw: &str,
        realm: &str,
        nonce: &str,
        method: &str,
        uri: &str,
        nc: &str,
    ) -> Credentials {
        let ha1 = a.hex(format!("{user}:{realm}:{pw}").as_bytes());
        let ha2 = a.hex(format!("{method}:{uri}").as_bytes());
        let cnonce = "0a4f113b";
        let response = a.hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes());
        Credentials {
            username: user.into(),
            realm: realm.into(),
            nonce: nonce.into(),
            uri: uri.into(),
            response,
            algorithm: Some(a.token().into()),
            cnonce: Some(cnonce.into()),
            qop: Some("auth".into()),
            nc: Some(nc.into()),
            opaque: None,
        }
    }

    #[test]
    fn a_client_answer_to_each_challenge_verifies() {
        let mut auth = Authenticator::new(
            "rvoip.test",
            b"k",
            30_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        );
        for (i, challenge) in auth.challenges(1_000, false).into_iter().enumerate() {
            let value = answer_challenge(
                challenge.as_bytes(),
                "alice",
                "alicepw",
                "REGISTER",
                "sip:rvoip.test",
                "c0ffee",
                // Both challenges carry the same nonce: each answer counts up.
                2 * i as u32 + 1,
            )
            .unwrap_or_else(|| panic!("{challenge}"));
            let params = value
                .strip_prefix("Digest ")
                .unwrap_or_else(|| panic!("{value}"));
            let creds = parse_credentials(params.as_bytes()).unwrap_or_else(|| panic!("{value}"));
            let ok = auth.verify(1_001 + i as u64, b"REGISTER", &creds, secrets);
            assert!(ok.is_ok(), "{challenge} -> {value}: {ok:?}");
            let wrong = answer_challenge(
                challenge.as_bytes(),
                "alice",
                "nope",
                "REGISTER",
                "sip:rvoip.test",
                "c0ffee",
                2 * i as u32 + 2,
            )
            .and_then(|v| parse_credentials(v.strip_prefix("Digest ")?.as_bytes()));
            assert!(wrong.is_some_and(|c| {
                auth.verify(1_002 + i as u64, b"REGISTER", &c, secrets)
                    .is_err()
            }));
        }
        assert!(
            answer_challenge(b"Basic realm=\"x\"", "a", "b", "REGISTER", "sip:x", "c", 1).is_none()
        );
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    }

    fn secrets(u: &str) -> Option<Secret> {
        (u == "alice").then(|| Secret::Password("alicepw".into()))
    }

    #[test]
    fn nonces_are_unique_per_challenge_and_die_with_the_instance() {
        let mut auth = Authenticator::new(
            "rvoip.test",
            b"secret",
            300_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        );
        // Two clients challenged in the same millisecond each get their own
        // nonce, so each may start at nonce-count 1.
        let n1 = nonce_of(&auth.challenges(5_000, false)[0]);
        let n2 = nonce_of(&auth.challenges(5_000, false)[0]);
        assert_ne!(n1, n2);
        for n in [&n1, &n2] {
            let c = answer(
                Algorithm::Md5,
                "alice",
                "alicepw",
                "rvoip.test",
                n,
                "REGISTER",
                "sip:rvoip.test",
                "00000001",
            );
            assert!(auth.verify(5_001, b"REGISTER", &c, secrets).is_ok());
        }
        // A restarted instance (same secret, another run's randomness) does
        // not honour them: its clock and nonce counts start over.
        let mut again = Authenticator::new(
            "rvoip.test",
            b"secret",
            300_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(2),
        );
        let c = answer(
            Algorithm::Md5,
            "alice",
            "alicepw",
            "rvoip.test",
            &n1,
            "REGISTER",
            "sip:rvoip.test",
            "00000002",
        );
        assert_eq!(
            again.verify(10, b"REGISTER", &c, secrets).err(),
            Some(AuthFailure::Rejected)
        );
    }

    #[test]
    fn md5_and_sha256_answers_verify_and_replays_fail() {
        let mut auth = Authenticator::new(
            "rvoip.test",
            b"secret",
            300_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        )
        .with_algorithms(&[Algorithm::Md5, Algorithm::Sha256]);
        let ch = auth.challenges(1_000, false);
        assert!(ch[0].contains("algorithm=MD5") && ch[1].contains("algorithm=SHA-256"));
        let nonce = nonce_of(&ch[0]);
        for (a, nc) in [
            (Algorithm::Md5, "00000001"),
            (Algorithm::Sha256, "00000002"),
        ] {
            let c = answer(
                a,
                "alice",
                "alicepw",
                "rvoip.test",
                &nonce,
                "REGISTER",
                "sip:rvoip.test",
                nc,
            );
            assert_eq!(
                auth.verify(2_000, b"REGISTER", &c, secrets)
                    .map(|a| a.user().to_string()),
                Ok("alice".into()),
                "{a:?}"
            );
        }
        let replay = answer(
            Algorithm::Md5,
            "alice",
            "alicepw",
            "rvoip.test",
            &nonce,
            "REGISTER",
            "sip:rvoip.test",
            "00000002",
        );
        assert_eq!(
            auth.verify(3_000, b"REGISTER", &replay, secrets),
            Err(AuthFailure::Rejected),
            "nonce-count replay"
        );
        let wrong = answer(
            Algorithm::Md5,
            "alice",
            "nope",
            "rvoip.test",
            &nonce,
            "REGISTER",
            "sip:rvoip.test",
            "00000009",
        );
        assert_eq!(
            auth.verify(3_000, b"REGISTER", &wrong, secrets),
            Err(AuthFailure::Rejected)
        );
        let other_method = answer(
            Algorithm::Md5,
            "alice",
            "alicepw",
            "rvoip.test",
            &nonce,
            "INVITE",
            "sip:rvoip.test",
            "0000000a",
        );
        assert_eq!(
            auth.verify(3_000, b"REGISTER", &other_method, secrets),
            Err(AuthFailure::Rejected)
        );
    }

    #[test]
    fn expired_nonces_are_stale_and_forged_ones_rejected() {
        let mut auth = Authenticator::new(
            "rvoip.test",
            b"secret",
            10_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        )
        .with_algorithms(&[Algorithm::Md5, Algorithm::Sha256]);
        let nonce = nonce_of(&auth.challenges(0, false)[0]);
        let c = answer(
            Algorithm::Sha256,
            "alice",
            "alicepw",
            "rvoip.test",
            &nonce,
            "INVITE",
            "sip:bob@rvoip.test",
            "00000001",
        );
        assert_eq!(
            auth.verify(20_000, b"INVITE", &c, secrets),
            Err(AuthFailure::Stale)
        );
        assert!(auth.challenges(20_000, true)[0].ends_with("stale=true"));
        let forged = Authenticator::new(
            "rvoip.test",
            b"other",
            10_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        )
        .challenges(0, false);
        let c = answer(
            Algorithm::Md5,
            "alice",
            "alicepw",
            "rvoip.test",
            &nonce_of(&forged[0]),
            "INVITE",
            "sip:x",
            "00000001",
        );
        assert_eq!(
            auth.verify(1_000, b"INVITE", &c, secrets),
            Err(AuthFailure::Rejected)
        );
    }

    #[test]
    fn parses_authorization_parameters() {
        let c = parse_credentials(
            br#"username="alice", realm="rvoip.test",nonce="abc", uri="sip:rvoip.test", response="0123ABCD", algorithm=MD5, cnonce="xy\"z", qop=auth, nc=00000001"#,
        )
        .unwrap_or_else(|| panic!("parses"));
        assert_eq!(
            (
                c.username.as_str(),
                c.response.as_str(),
                c.cnonce.as_deref()
            ),
            ("alice", "0123abcd", Some("xy\"z"))
        );
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert!(parse_credentials(b"username=\"alice\"").is_none());
        assert!(parse_credentials(b"username=\"unterminated").is_none());
    }

    #[test]
    fn rfc_2617_style_response_without_qop_verifies() {
        let mut auth = Authenticator::new(
            "rvoip.test",
            b"k",
            60_000,
            &rvoip_dataplane::entropy::SeededEntropy::new(1),
        );
        let nonce = nonce_of(&auth.challenges(0, false)[0]);
        let a = Algorithm::Md5;
        let ha1 = a.hex(b"alice:rvoip.test:alicepw");
        let ha2 = a.hex(b"REGISTER:sip:rvoip.test");
        let response = a.hex(format!("{ha1}:{nonce}:{ha2}").as_bytes());
        let c = Credentials {
            username: "alice".into(),
            realm: "rvoip.test".into(),
            nonce,
            uri: "sip:rvoip.test".into(),
            response,
            ..Credentials::default()
        };
        assert!(auth.verify(1, b"REGISTER", &c, secrets).is_ok());
    }
}
