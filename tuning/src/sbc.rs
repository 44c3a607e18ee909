//! The SBC part of the configuration (`mode = "b2bua"`): realms with their
//! access lists and limits, trunks with their peers, dispatcher policy,
//! limits, codecs and header rules, the routing table, number
//! normalization, flood protection, session timers and CDRs.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Transport;

/// Media protection a realm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MediaProtection {
    /// Plain RTP (RTP/AVP).
    #[default]
    Rtp,
    /// SRTP keyed by SDES (RTP/SAVP, RFC 4568), required: a plain RTP
    /// offer from this realm is answered 488.
    Srtp,
    /// SRTP offered towards this realm; plain RTP offers from it are
    /// accepted too.
    #[serde(rename = "srtp-optional")]
    SrtpOptional,
    /// WebRTC (browsers): the relay is an ICE-lite agent and terminates
    /// DTLS-SRTP with rtcp-mux (UDP/TLS/RTP/SAVPF, RFC 8834/8827); the
    /// other side gets what its realm speaks.
    Webrtc,
}

/// A realm: one side of the SBC (access, core), with who may send from it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Realm {
    /// Name, referenced by listeners and trunks.
    pub name: String,
    /// Source networks allowed to send (CIDR); empty allows none.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Media protection on this side.
    #[serde(default)]
    pub media: MediaProtection,
    /// New calls per second one source address may start (0: no limit).
    #[serde(default)]
    pub cps_per_source: u32,
    /// Calls one source address may have up at once (0: no limit).
    #[serde(default)]
    pub calls_per_source: u32,
    /// Codecs this realm's side is offered, in order of preference
    /// (encoding names or static payload numbers), when a trunk into it
    /// names none; empty: as offered.
    #[serde(default)]
    pub codecs: Vec<String>,
    /// Transcode towards this realm: its codecs are added to offers and the
    /// caller's others hidden; when the callee answers with a codec the
    /// caller lacks, the relay transcodes. Off: codecs are only filtered.
    #[serde(default)]
    pub transcode: bool,
    /// The relay's IPv4 address for this realm's side of calls (default:
    /// `[media] address`).
    #[serde(default)]
    pub media_address: Option<std::net::IpAddr>,
    /// The relay's IPv6 address for this realm's IPv6 peers (default:
    /// `[media] address_v6`).
    #[serde(default)]
    pub media_address_v6: Option<std::net::IpAddr>,
}

/// How a trunk picks among its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Dispatch {
    /// The lowest `priority` value first; the next on failure.
    #[default]
    Priority,
    /// Each new call starts at the next peer.
    RoundRobin,
    /// New calls spread in proportion to `weight`.
    Weighted,
}

/// One peer of a trunk: an address, or a table with weight and priority.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// `"127.0.0.1:5070"`: weight 1, priority by position.
    Address(SocketAddr),
    /// `{ address = "…", weight = 2, priority = 1 }`.
    Full(Target),
    /// `{ uri = "sip:NAME" }`: every server the name publishes (RFC 3263:
    /// NAPTR, SRV, A/AAAA), re-resolved as its records expire.
    Uri(UriTarget),
}

/// A trunk peer given as a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriTarget {
    /// `sip:NAME`, `sip:NAME:PORT`, `sip:NAME;transport=tcp`, `sips:NAME`.
    pub uri: String,
    /// Order under the priority policy against the trunk's other targets
    /// (lower first; SRV priorities order the name's own servers).
    #[serde(default)]
    pub priority: Option<u32>,
}

/// A peer with its dispatcher parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Address.
    pub address: SocketAddr,
    /// Share of new calls under the weighted policy.
    #[serde(default = "one")]
    pub weight: u32,
    /// Order under the priority policy (lower first); default by position.
    #[serde(default)]
    pub priority: Option<u32>,
    /// How to reach it: `udp` (default), `tcp` or `tls` (rvoip opens the
    /// connection, presents `[tls] certificate`, and checks the peer's
    /// against `[tls] peer_ca`).
    #[serde(default)]
    pub transport: Transport,
}

fn one() -> u32 {
    1
}

impl TargetSpec {
    /// The peer with its parameters; `index` is its position in the list.
    /// None for a URI, whose peers come from DNS.
    pub fn resolve(&self, index: usize) -> Option<Target> {
        match self {
            TargetSpec::Address(a) => Some(Target {
                address: *a,
                weight: 1,
                priority: Some(index as u32),
                transport: Transport::Udp,
            }),
            TargetSpec::Full(t) => Some(Target {
                priority: t.priority.or(Some(index as u32)),
                ..t.clone()
            }),
            TargetSpec::Uri(_) => None,
        }
    }
}

/// What a header rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    /// Add a header field with `value`.
    Add,
    /// Remove every field of `name`.
    Remove,
    /// Replace matches of `pattern` with `value` in every field of `name`.
    Rewrite,
}

/// A header manipulation rule, applied to requests sent to a trunk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRule {
    /// What to do.
    pub action: HeaderAction,
    /// Header field name.
    pub name: String,
    /// Value to add, or the replacement (`$1` … refer to groups).
    #[serde(default)]
    pub value: Option<String>,
    /// Regular expression (rewrite).
    #[serde(default)]
    pub pattern: Option<String>,
}

/// A trunk: a group of peers in a realm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    /// Name.
    pub name: String,
    /// Realm it lives in.
    pub realm: String,
    /// Peers.
    pub targets: Vec<TargetSpec>,
    /// How a call picks its first peer; the others follow on failure.
    #[serde(default)]
    pub policy: Dispatch,
    /// Seconds a peer has to answer an INVITE (any response) before the
    /// call moves to the next peer.
    #[serde(default = "default_invite_timeout")]
    pub invite_timeout_secs: f64,
    /// New calls per second through this trunk (0: no limit).
    #[serde(default)]
    pub cps: u32,
    /// Calls up at once through this trunk (0: no limit).
    #[serde(default)]
    pub max_calls: u32,
    /// Codecs allowed towards this trunk, in order of preference (encoding
    /// names as in rtpmap, or static payload type numbers); empty: all, as
    /// offered. `telephone-event` is kept when the list names it.
    #[serde(default)]
    pub codecs: Vec<String>,
    /// Transcode towards this trunk (as a realm's `transcode`): its codecs
    /// are added to offers, the caller's others hidden, and the relay
    /// transcodes when the trunk answers with a codec the caller lacks.
    #[serde(default)]
    pub transcode: bool,
    /// Header rules for requests sent to this trunk.
    #[serde(default)]
    pub headers: Vec<HeaderRule>,
    /// Send OPTIONS to each peer and skip peers that do not answer.
    #[serde(default = "default_true")]
    pub health_checks: bool,
}

fn default_true() -> bool {
    true
}

fn default_invite_timeout() -> f64 {
    3.0
}

/// One entry of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SbcRoute {
    /// Number prefix, after normalization (`+1`, `+4420`); the longest
    /// matching prefix wins; an empty prefix matches every number.
    #[serde(default)]
    pub prefix: String,
    /// Only calls arriving from this realm (default: any).
    #[serde(default)]
    pub from_realm: Option<String>,
    /// Trunk the call goes to.
    pub trunk: String,
}

/// Number normalization to E.164.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Numbering {
    /// Country code for national numbers (`1`, `44`); empty: none.
    #[serde(default)]
    pub country_code: String,
    /// Prefix that marks a national number (`0`), replaced by the country code.
    #[serde(default)]
    pub national_prefix: String,
    /// Prefix that marks an international number (`00`, `011`), replaced by `+`.
    #[serde(default)]
    pub international_prefix: String,
}

/// Flood protection: a source sending more than this is banned for a while.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// Out-of-dialog INVITE, REGISTER, OPTIONS, MESSAGE and SUBSCRIBE
    /// requests per second one source may send before it is banned (0: off).
    #[serde(default = "default_flood_rate")]
    pub requests_per_sec: u32,
    /// Seconds a flooding source stays banned.
    #[serde(default = "default_ban")]
    pub ban_secs: u32,
}

fn default_flood_rate() -> u32 {
    200
}
fn default_ban() -> u32 {
    60
}

impl Default for Flood {
    fn default() -> Self {
        Flood {
            requests_per_sec: default_flood_rate(),
            ban_secs: default_ban(),
        }
    }
}

/// What happens to REFER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReferMode {
    /// Passed to the other leg.
    #[default]
    Pass,
    /// Answered here with 603 Declined.
    Reject,
}

/// SBC settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sbc {
    /// Where CDRs go, one JSON line per call (relative: to the directory of
    /// the configuration file, like every path); none: no CDRs.
    #[serde(default)]
    pub cdr_file: Option<PathBuf>,
    /// Seconds between OPTIONS health checks of each trunk peer.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: f64,
    /// Session interval asked of both legs (RFC 4028), seconds; a call not
    /// refreshed within it is torn down. 0: no session timer.
    #[serde(default = "default_session_expires")]
    pub session_expires_secs: u32,
    /// Smallest session interval accepted (Min-SE).
    #[serde(default = "default_min_se")]
    pub min_se_secs: u32,
    /// REFER handling.
    #[serde(default)]
    pub refer: ReferMode,
    /// Number normalization.
    #[serde(default)]
    pub numbering: Numbering,
    /// Flood protection.
    #[serde(default)]
    pub flood: Flood,
    /// The routing table.
    #[serde(default)]
    pub routes: Vec<SbcRoute>,
}

fn default_health_interval() -> f64 {
    5.0
}
fn default_session_expires() -> u32 {
    1800
}
fn default_min_se() -> u32 {
    90
}

impl Default for Sbc {
    fn default() -> Self {
        Sbc {
            cdr_file: None,
            health_interval_secs: default_health_interval(),
            session_expires_secs: default_session_expires(),
            min_se_secs: default_min_se(),
            refer: ReferMode::default(),
            numbering: Numbering::default(),
            flood: Flood::default(),
            routes: Vec::new(),
        }
    }
}

/// What is wrong with a header rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// The name is not a header field name.
    Name(String),
    /// The header is the B2BUA's own (Via, Call-ID, CSeq, From, To,
    /// Content-Length): only a rewrite may touch it.
    Managed(String),
    /// An add without a value.
    AddValue,
    /// A rewrite without a pattern.
    RewritePattern,
    /// A rewrite without a replacement.
    RewriteValue,
    /// The pattern is not a regular expression: the parser's words.
    Pattern(String),
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleError::Name(n) => write!(f, "{n:?} is not a header field name"),
            RuleError::Managed(n) => {
                write!(f, "{n} is managed by the B2BUA; it can only be rewritten")
            }
            RuleError::AddValue => f.write_str("add needs a value"),
            RuleError::RewritePattern => f.write_str("rewrite needs a pattern"),
            RuleError::RewriteValue => f.write_str("rewrite needs a value (the replacement)"),
            RuleError::Pattern(e) => write!(f, "pattern: {e}"),
        }
    }
}

impl std::error::Error for RuleError {}

/// Checks one header rule: the fields its action needs, a valid name, a
/// pattern that compiles.
pub fn check_rule(rule: &HeaderRule) -> Result<(), RuleError> {
    if rule.name.is_empty()
        || !rule
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
    {
        return Err(RuleError::Name(rule.name.clone()));
    }
    let forbidden = [
        "via",
        "v",
        "call-id",
        "i",
        "cseq",
        "from",
        "f",
        "to",
        "t",
        "content-length",
        "l",
    ];
    if forbidden.contains(&rule.name.to_ascii_lowercase().as_str())
        && rule.action != HeaderAction::Rewrite
    {
        return Err(RuleError::Managed(rule.name.clone()));
    }
    match rule.action {
        HeaderAction::Add if rule.value.is_none() => Err(RuleError::AddValue),
        HeaderAction::Rewrite => {
            let Some(p) = &rule.pattern else {
                return Err(RuleError::RewritePattern);
            };
            if rule.value.is_none() {
                return Err(RuleError::RewriteValue);
            }
            regex::Regex::new(p)
                .map(|_| ())
                .map_err(|e| RuleError::Pattern(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// Checks the SBC sections of a B2BUA configuration.
pub(crate) fn validate(c: &crate::Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_string(), m));
    if c.realms.is_empty() {
        return err("realms", "mode = \"b2bua\" needs at least one realm".into());
    }
    for (i, l) in c.sip.listen.iter().enumerate() {
        if l.realm.is_none() {
            return err(
                &format!("sip.listen[{i}].realm"),
                "in mode = \"b2bua\" every listener belongs to a realm".into(),
            );
        }
    }
    for (i, t) in c.trunks.iter().enumerate() {
        let listens = c
            .sip
            .listen
            .iter()
            .any(|l| l.realm.as_deref() == Some(t.realm.as_str()));
        if !listens {
            return err(
                &format!("trunks[{i}].realm"),
                format!(
                    "no listener is in realm {:?}: nothing to send from",
                    t.realm
                ),
            );
        }
    }
    let s = &c.sbc;
    if s.routes.is_empty() {
        return err(
            "sbc.routes",
            "mode = \"b2bua\" needs at least one route".into(),
        );
    }
    for (i, r) in s.routes.iter().enumerate() {
        if !c.trunks.iter().any(|t| t.name == r.trunk) {
            return err(
                &format!("sbc.routes[{i}].trunk"),
                format!("no trunk named {:?}", r.trunk),
            );
        }
        if let Some(realm) = &r.from_realm
            && !c.realms.iter().any(|x| &x.name == realm)
        {
            return err(
                &format!("sbc.routes[{i}].from_realm"),
                format!("no realm named {realm:?}"),
            );
        }
        if !r
            .prefix
            .bytes()
            .enumerate()
            .all(|(j, b)| b.is_ascii_digit() || (j == 0 && b == b'+'))
        {
            return err(
                &format!("sbc.routes[{i}].prefix"),
                format!(
                    "{:?} is not a number prefix (digits, optionally after +)",
                    r.prefix
                ),
            );
        }
        if s.routes[..i]
            .iter()
            .any(|o| o.prefix == r.prefix && o.from_realm == r.from_realm)
        {
            return err(
                &format!("sbc.routes[{i}].prefix"),
                format!("prefix {:?} is routed twice", r.prefix),
            );
        }
    }
    if !(0.5..=3600.0).contains(&s.health_interval_secs) {
        return err(
            "sbc.health_interval_secs",
            "must be between 0.5 and 3600".into(),
        );
    }
    if s.session_expires_secs != 0 && s.session_expires_secs < s.min_se_secs {
        return err(
            "sbc.session_expires_secs",
            format!("must be 0 or at least sbc.min_se_secs ({})", s.min_se_secs),
        );
    }
    if s.min_se_secs < 90 {
        return err(
            "sbc.min_se_secs",
            "must be at least 90 (RFC 4028 §4)".into(),
        );
    }
    let n = &s.numbering;
    for (key, v) in [
        ("sbc.numbering.country_code", &n.country_code),
        ("sbc.numbering.national_prefix", &n.national_prefix),
        (
            "sbc.numbering.international_prefix",
            &n.international_prefix,
        ),
    ] {
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            return err(key, format!("{v:?} must be digits"));
        }
    }
    if !n.national_prefix.is_empty() && n.country_code.is_empty() {
        return err(
            "sbc.numbering.national_prefix",
            "needs sbc.numbering.country_code".into(),
        );
    }
    Ok(())
}
