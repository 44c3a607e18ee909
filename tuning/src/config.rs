//! The configuration file: one TOML document, every key known, every value
//! checked before the appliance starts. A bad file fails with its path, the
//! key and what is wrong:
//!
//! ```text
//! config/rvoip.toml:14: media.port_min: must be below media.port_max (40000 >= 39999)
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::sbc::{Realm, Sbc, Trunk};

/// A configuration problem: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`sip.listen[0].address`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which kind of SIP element the appliance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stateful proxy and registrar (RFC 3261 §16, §10).
    Proxy,
    /// Back-to-back user agent: the SBC.
    B2bua,
}

/// A SIP transport rvoip speaks: the one transport type of every crate (a
/// listener's, a route's, a message's on the shared-memory channel, a
/// parsed Via's, a hop's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP
    #[default]
    Udp,
    /// TCP
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2)
    Tls,
    /// WebSocket (RFC 7118): a listener's connections only, from browsers
    Ws,
    /// WebSocket over TLS (RFC 7118)
    Wss,
}

impl Transport {
    /// The Via token (RFC 3261 §20.42).
    pub fn token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The transport a Via token names, if rvoip speaks it (tokens are
    /// case-insensitive).
    pub fn from_token(t: &[u8]) -> Option<Transport> {
        [
            Transport::Udp,
            Transport::Tcp,
            Transport::Tls,
            Transport::Ws,
            Transport::Wss,
        ]
        .into_iter()
        .find(|x| x.token().as_bytes().eq_ignore_ascii_case(t))
    }

    /// Whether the transport is a stream (TCP, TLS, WS, WSS): it delivers reliably
    /// (no SIP retransmissions) over connections.
    pub fn reliable(self) -> bool {
        self != Transport::Udp
    }

    /// Its one-octet code in a shared-memory record.
    pub fn code(self) -> u8 {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
            Transport::Ws => 3,
            Transport::Wss => 4,
        }
    }

    /// The transport of a record's code.
    pub fn from_code(c: u8) -> Option<Transport> {
        match c {
            0 => Some(Transport::Udp),
            1 => Some(Transport::Tcp),
            2 => Some(Transport::Tls),
            3 => Some(Transport::Ws),
            4 => Some(Transport::Wss),
            _ => None,
        }
    }

    /// The URI parameter value (`transport=tls`).
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether it runs over TLS (TLS, WSS).
    pub fn secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Whether connections of it are only ever accepted (WebSocket:
    /// rvoip opens none; a peer is reached over the connection it opened).
    pub fn accepted_only(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// The transport a URI's `transport=` value names, if rvoip speaks it.
    pub fn from_param(v: &[u8]) -> Option<Transport> {
        Transport::from_token(v)
    }
}

/// How a dataplane worker waits for packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Polling {
    /// Sleep in the kernel until a packet arrives: least CPU at light load.
    #[default]
    Interrupt,
    /// Spin for a while after traffic before sleeping: fewer wake-ups at moderate load.
    Adaptive,
}

/// Which I/O driver the dataplane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IoDriver {
    /// io_uring when the kernel allows it, else the fallback.
    #[default]
    Auto,
    /// io_uring only; fail to start without it.
    IoUring,
    /// No io_uring: recvmmsg/sendmmsg for the media workers, poll(2) for
    /// the SIP workers; for kernels or sandboxes that refuse io_uring, and
    /// tests.
    Fallback,
    /// Kernel bypass: AF_XDP sockets on the queues of `[dataplane]
    /// interface`, rvoip's XDP program steering its UDP to them (the media
    /// workers, one per queue; SIP and ng stay on the kernel path for now).
    /// Never chosen by `auto`.
    #[serde(rename = "af_xdp")]
    AfXdp,
}

/// Top-level node settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Name in logs and CDRs.
    #[serde(default = "default_node_name")]
    pub name: String,
    /// Proxy or B2BUA.
    pub mode: Mode,
    /// Directory for persistent state (registrations, dialogs); relative paths
    /// are taken from the configuration file's directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_node_name() -> String {
    "rvoip".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// One SIP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address and port to bind.
    pub address: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Realm the listener belongs to (SBC), if any.
    #[serde(default)]
    pub realm: Option<String>,
}

/// SIP settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    /// Listeners; at least one.
    pub listen: Vec<Listener>,
    /// Domains this node is responsible for (registrar, local requests).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Largest message accepted, in octets.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: usize,
    /// Longest header line accepted, in octets.
    #[serde(default = "default_max_line_length")]
    pub max_line_length: usize,
    /// Most header fields in one message.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Messages per second accepted from one source address before the
    /// control plane (0: no limit).
    #[serde(default)]
    pub rate_limit: u32,
    /// Stream connections (TCP, TLS, WebSocket) one source address may
    /// hold open at once across all workers (0: no limit).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: u32,
    /// Seconds a stream connection may take to finish its TLS handshake
    /// or WebSocket upgrade before it is closed.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u32,
    /// Seconds a stream connection may stay silent both ways before it is
    /// closed (RFC 5626 CRLF keep-alives count as traffic; 0: never).
    #[serde(default = "default_connection_idle")]
    pub connection_idle_secs: u32,
    /// Origins (as browsers send them, e.g. `https://phone.example.com`)
    /// allowed to open SIP WebSocket connections; empty: any.
    #[serde(default)]
    pub websocket_origins: Vec<String>,
}

fn default_max_connections_per_source() -> u32 {
    256
}
fn default_handshake_timeout() -> u32 {
    10
}
fn default_connection_idle() -> u32 {
    600
}

fn default_fill_calls() -> usize {
    1000
}

fn default_batch_wait_us() -> u32 {
    400
}

fn default_max_message_size() -> usize {
    65_535
}
fn default_max_line_length() -> usize {
    8_192
}
fn default_max_headers() -> usize {
    256
}

/// A static route of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Match Request-URI users starting with this.
    #[serde(default)]
    pub user_prefix: Option<String>,
    /// Match this Request-URI host.
    #[serde(default)]
    pub domain: Option<String>,
    /// Next hop: an address.
    #[serde(default)]
    pub target: Option<SocketAddr>,
    /// Next hop: a SIP URI (an outbound proxy by name), resolved as RFC
    /// 3263 says (its records give the transport).
    #[serde(default)]
    pub uri: Option<String>,
    /// Transport to an address `target`.
    #[serde(default = "default_udp")]
    pub transport: Transport,
}

fn default_udp() -> Transport {
    Transport::Udp
}

/// Proxy settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `true`: transaction-stateful (RFC 3261 §16: 100 Trying, forking,
    /// response selection, CANCEL, Timer C). `false`: stateless (§16.11):
    /// every request goes to the first target and every response back by
    /// its Via, with no state kept; requests for this element (REGISTER,
    /// OPTIONS) are still answered.
    #[serde(default = "default_true")]
    pub stateful: bool,
    /// Record-Route dialog-creating requests.
    #[serde(default = "default_true")]
    pub record_route: bool,
    /// Static routes for requests not served locally; first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Source networks (CIDR) whose requests are relayed to any target,
    /// like authenticated ones. Everyone else reaches only this proxy's
    /// domains, registered users, static routes and dialogs it
    /// record-routed; other targets get 403 (no open relay).
    #[serde(default)]
    pub trusted_sources: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            stateful: true,
            record_route: true,
            routes: Vec::new(),
            trusted_sources: Vec::new(),
        }
    }
}

/// Which requests are challenged for digest credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// None.
    #[default]
    Off,
    /// REGISTER (401).
    Register,
    /// REGISTER (401) and INVITE (407).
    RegisterAndInvite,
}

/// Admission by measured load: while any limit is passed, new calls are
/// refused with 503 and Retry-After (RFC 3261 §21.5.4) so that the calls
/// already up keep their media. Limits of 0 are off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overload {
    /// Admission by load at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Demand for a core of the busiest media worker (the time it ran or
    /// waited to run), smoothed over its last seconds, percent.
    #[serde(default = "default_media_busy_pct")]
    pub media_busy_pct: u32,
    /// Packets the relay forwards per second, all workers.
    #[serde(default)]
    pub media_packets_per_sec: u64,
    /// SIP messages waiting for the control plane.
    #[serde(default = "default_backlog")]
    pub sip_backlog: u32,
    /// Retry-After of the refusals, seconds.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u32,
}

fn default_media_busy_pct() -> u32 {
    95
}
fn default_backlog() -> u32 {
    2000
}
fn default_retry_after() -> u32 {
    5
}

impl Default for Overload {
    fn default() -> Self {
        Overload {
            enabled: true,
            media_busy_pct: default_media_busy_pct(),
            media_packets_per_sec: 0,
            sip_backlog: default_backlog(),
            retry_after_secs: default_retry_after(),
        }
    }
}

/// A digest algorithm the registrar may challenge with (RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DigestAlgorithm {
    /// `MD5`: what nearly every deployed phone speaks.
    #[serde(rename = "MD5")]
    Md5,
    /// `SHA-256`.
    #[serde(rename = "SHA-256")]
    Sha256,
}

/// Registrar settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSettings {
    /// Users file (`[[user]] name, password`), relative to this file.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Authentication.
    #[serde(default)]
    pub auth: AuthMode,
    /// Shortest registration, seconds.
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    /// Longest registration, seconds.
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    /// Registration time when none is asked, seconds.
    #[serde(default = "default_expires")]
    pub default_expires: u32,
    /// Nonce lifetime, seconds.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime_secs: u32,
    /// Digest algorithms challenged with, one challenge each in this order
    /// (RFC 8760 §2.4). MD5 alone by default: many phones give up when a
    /// response carries more than one challenge.
    #[serde(default = "default_digest_algorithms")]
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// Failed digest attempts (wrong answers, unknown users) from one source
    /// within `auth_failure_window_secs` before that source is refused with
    /// 403 for `auth_ban_secs` (0: never).
    #[serde(default = "default_auth_failures_before_ban")]
    pub auth_failures_before_ban: u32,
    /// The window failures are counted in, seconds.
    #[serde(default = "default_auth_failure_window")]
    pub auth_failure_window_secs: u32,
    /// How long a source stays refused, seconds.
    #[serde(default = "default_auth_ban")]
    pub auth_ban_secs: u32,
}

fn default_digest_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Md5]
}
fn default_auth_failures_before_ban() -> u32 {
    20
}
fn default_auth_failure_window() -> u32 {
    60
}
fn default_auth_ban() -> u32 {
    300
}

fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    7200
}
fn default_expires() -> u32 {
    3600
}
fn default_nonce_lifetime() -> u32 {
    300
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            users_file: None,
            auth: AuthMode::Off,
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_expires(),
            nonce_lifetime_secs: default_nonce_lifetime(),
            digest_algorithms: default_digest_algorithms(),
            auth_failures_before_ban: default_auth_failures_before_ban(),
            auth_failure_window_secs: default_auth_failure_window(),
            auth_ban_secs: default_auth_ban(),
        }
    }
}

/// Which cores run dataplane workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Cores {
    /// `"all"`: one worker per online core.
    Named(String),
    /// Explicit core ids.
    List(Vec<usize>),
}

impl Default for Cores {
    fn default() -> Self {
        Cores::Named("all".into())
    }
}

/// Dataplane settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    /// Cores for workers.
    #[serde(default)]
    pub cores: Cores,
    /// Wait policy.
    #[serde(default)]
    pub polling: Polling,
    /// With `interrupt` polling: how long a wake-up may wait for more packets
    /// before handling them, in microseconds (io_uring on kernel 6.12+).
    /// While traffic flows it is also how often a SIP worker and the media
    /// order server look at what the control plane queued for them (they
    /// are not woken per record then).
    #[serde(default = "default_batch_wait_us")]
    pub batch_wait_us: u32,
    /// The SIP workers' own batch window, where it should differ from the
    /// media workers' (unset: `batch_wait_us`). A longer one costs each
    /// message up to that much more time through the SBC and saves the
    /// wake-ups (CPU per call) of a busy signalling load.
    #[serde(default)]
    pub sip_batch_wait_us: Option<u32>,
    /// Calls a media worker takes before new calls spread to the least
    /// loaded worker (0: spread from the first call).
    #[serde(default = "default_fill_calls")]
    pub fill_calls: usize,
    /// I/O driver.
    #[serde(default)]
    pub io: IoDriver,
    /// The link AF_XDP takes packets from (`io = "af_xdp"`).
    #[serde(default)]
    pub interface: Option<String>,
}

/// How the relay learns a peer's real address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Latch {
    /// Symmetric RTP: latch onto the first packet's source (NAT traversal).
    #[default]
    Learning,
    /// Accept only the address the SDP gave.
    Strict,
}

impl Dataplane {
    /// The SIP workers' batch window in microseconds.
    pub fn sip_batch_wait_us(&self) -> u32 {
        self.sip_batch_wait_us.unwrap_or(self.batch_wait_us)
    }
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            cores: Cores::default(),
            polling: Polling::default(),
            batch_wait_us: default_batch_wait_us(),
            sip_batch_wait_us: None,
            fill_calls: default_fill_calls(),
            io: IoDriver::default(),
            interface: None,
        }
    }
}

/// Media relay settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Address the relay binds.
    pub address: IpAddr,
    /// Address written into SDP, when the relay sits behind NAT.
    #[serde(default)]
    pub advertised_address: Option<IpAddr>,
    /// The relay's IPv6 address: a leg whose peer is IPv6 (its SDP says
    /// `c=IN IP6`, or its realm is reached over IPv6, or ng asks with
    /// `address family: IP6`) is given this one, and media crosses between
    /// the families. None: IPv4 only.
    #[serde(default)]
    pub address_v6: Option<IpAddr>,
    /// First RTP port (even).
    pub port_min: u16,
    /// Last RTP port.
    pub port_max: u16,
    /// Seconds without packets before a call's media is reported dead.
    #[serde(default = "default_media_timeout")]
    pub timeout_secs: u32,
    /// Latching policy.
    #[serde(default)]
    pub latch: Latch,
    /// The Opus encoder of transcoded calls.
    #[serde(default)]
    pub opus: OpusConfig,
}

fn default_media_timeout() -> u32 {
    60
}

/// How the relay encodes Opus when it transcodes (`[media.opus]`); an ng
/// offer's `opus/48000/2/<bitrate>` overrides the bit rate for its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpusConfig {
    /// Target bit rate, bit/s (6000–510000).
    #[serde(default = "default_opus_bitrate")]
    pub bitrate: u32,
    /// Encoder complexity 0 (cheapest) – 10 (libopus's default).
    #[serde(default = "default_opus_complexity")]
    pub complexity: u8,
    /// In-band forward error correction.
    #[serde(default = "default_true_opus")]
    pub fec: bool,
    /// Discontinuous transmission during silence.
    #[serde(default)]
    pub dtx: bool,
    /// Loss the encoder prepares for, percent (0–100).
    #[serde(default = "default_opus_loss")]
    pub expected_loss_pct: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            bitrate: default_opus_bitrate(),
            complexity: default_opus_complexity(),
            fec: true,
            dtx: false,
            expected_loss_pct: default_opus_loss(),
        }
    }
}

fn default_opus_bitrate() -> u32 {
    24_000
}
fn default_opus_complexity() -> u8 {
    10
}
fn default_true_opus() -> bool {
    true
}
fn default_opus_loss() -> u8 {
    5
}

/// The rtpengine-compatible ng control listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ng {
    /// UDP address for bencoded ng commands.
    pub listen: SocketAddr,
}

/// Capture (`[capture]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// HEP v3 collector (UDP) that gets every SIP message received and
    /// sent, and a quality report of each call at its end; off when absent.
    pub hep: Option<SocketAddr>,
    /// `udp` (one datagram per packet, as Homer listens by default) or
    /// `tcp` (a stream of packets: far fewer system calls and kernel work
    /// per message at high rates).
    #[serde(default)]
    pub hep_transport: HepTransport,
    /// Capture agent id written into every packet.
    #[serde(default = "default_hep_agent")]
    pub hep_agent_id: u32,
    /// Percent of Call-IDs captured (every message of a Call-ID or none).
    #[serde(default = "default_hep_sample")]
    pub hep_sample_pct: u8,
    /// Directory of the per-call pcap files `rvoip ctl capture` writes
    /// (relative paths from this file's directory; default `captures` in
    /// the state directory).
    pub pcap_dir: Option<PathBuf>,
}

/// How HEP packets travel to the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HepTransport {
    /// One UDP datagram per packet.
    #[default]
    Udp,
    /// A TCP stream of packets.
    Tcp,
}

fn default_hep_agent() -> u32 {
    2001
}

fn default_hep_sample() -> u8 {
    100
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            hep: None,
            hep_transport: HepTransport::Udp,
            hep_agent_id: default_hep_agent(),
            hep_sample_pct: default_hep_sample(),
            pcap_dir: None,
        }
    }
}

/// SIP over TLS (`[tls]`): PEM files, relative to the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain the TLS listeners present (leaf first).
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// With it, TLS clients must present a certificate this CA issued
    /// (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The CAs whose certificates rvoip trusts when it opens TLS
    /// connections (to trunks, `sips:` targets); default: `client_ca`, else
    /// the system's bundle. rvoip presents `certificate` to peers that ask.
    #[serde(default)]
    pub peer_ca: Option<PathBuf>,
}

/// The system's CA bundle (Debian's `ca-certificates`).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl TlsFiles {
    /// The CAs trusted for peers' certificates, as written (relative to
    /// the configuration file unless absolute).
    pub fn peer_ca(&self) -> PathBuf {
        self.peer_ca
            .clone()
            .or_else(|| self.client_ca.clone())
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE))
    }
}

/// The Prometheus metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// TCP address of `GET /metrics` (text exposition format).
    pub listen: SocketAddr,
}

/// Control-plane settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// Directory for the shared-memory rings between the processes.
    #[serde(default = "default_ring_dir")]
    pub ring_dir: PathBuf,
    /// Slots (2 KiB each) per ring direction.
    #[serde(default = "default_ring_slots")]
    pub ring_slots: usize,
    /// While traffic flows, the control plane looks at its rings every
    /// `batch_wait_us` microseconds instead of being woken per message, so
    /// each wake-up serves a batch (0: woken per message). It sleeps on the
    /// rings again after 50 ms without traffic.
    #[serde(default = "default_cp_batch_wait_us")]
    pub batch_wait_us: u32,
    /// Control-plane shards: threads of the control plane, each owning the
    /// transactions and dialogs of the calls whose Call-ID hashes to it
    /// (the registrar and the SBC policy's limits shared; a media order
    /// channel each).
    /// Signalling capacity grows with them, a core each.
    #[serde(default = "default_shards")]
    pub shards: usize,
}

fn default_shards() -> usize {
    1
}

fn default_cp_batch_wait_us() -> u32 {
    1000
}

fn default_ring_slots() -> usize {
    4096
}

fn default_ring_dir() -> PathBuf {
    PathBuf::from("/dev/shm/rvoip")
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            ring_dir: default_ring_dir(),
            ring_slots: default_ring_slots(),
            batch_wait_us: default_cp_batch_wait_us(),
            shards: default_shards(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a filter such as
    /// `info,rvoip_controlplane::b2bua=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` (one line per event) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Lines one place in the code may write per second; the rest are
    /// counted and said in one line the next second (0: no limit).
    #[serde(default = "default_lines_per_sec")]
    pub lines_per_sec: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_lines_per_sec() -> u32 {
    50
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_log_level(),
            format: LogFormat::Text,
            lines_per_sec: default_lines_per_sec(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Node settings.
    pub node: Node,
    /// SIP settings.
    pub sip: Sip,
    /// Dataplane settings.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Media relay.
    pub media: Media,
    /// ng control protocol.
    pub ng: Option<Ng>,
    /// Control plane.
    #[serde(default)]
    pub controlplane: ControlPlane,
    /// Proxy.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Registrar.
    #[serde(default)]
    pub registrar: RegistrarSettings,
    /// Realms (SBC).
    #[serde(default)]
    pub realms: Vec<Realm>,
    /// Trunks (SBC).
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    /// SBC settings (B2BUA mode).
    #[serde(default)]
    pub sbc: Sbc,
    /// Recording (`[recording] dir`).
    #[serde(default)]
    pub recording: crate::mediaserver::RecordingConfig,
    /// The media server's own applications.
    #[serde(default)]
    pub mediaserver: crate::mediaserver::MediaServerConfig,
    /// Name resolution (RFC 3263).
    #[serde(default)]
    pub dns: crate::dns::DnsConfig,
    /// Admission by measured load.
    #[serde(default)]
    pub overload: Overload,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// The Prometheus endpoint (`[metrics] listen`); none without the
    /// section.
    pub metrics: Option<Metrics>,
    /// Capture of SIP to a HEP collector.
    #[serde(default)]
    pub capture: Capture,
    /// SIP over TLS: what the TLS listeners present (required with one).
    pub tls: Option<TlsFiles>,
    /// Where the file was read from; relative paths are resolved against its directory.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Line number (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds the line where `key` (a dotted path) is written, for errors found after parsing.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next()?.split('[').next()?;
    let table = key
        .rsplit_once('.')
        .map(|(t, _)| t.split('[').next().unwrap_or(t));
    let mut in_table = table.is_none();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = table.is_some_and(|tb| tb == name);
            continue;
        }
        if in_table && t.split('=').next().is_some_and(|k| k.trim() == leaf) {
            return Some(n + 1);
        }
    }
    None
}

/// What is wrong with a network written as an address or a CIDR prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CidrError {
    /// No IP address before the `/`.
    Address(String),
    /// A prefix length that is not a number up to the address's bits.
    Prefix(String),
}

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CidrError::Address(t) => write!(f, "{t:?} is not an IP address or CIDR network"),
            CidrError::Prefix(t) => write!(f, "{t:?} has a bad prefix length"),
        }
    }
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), CidrError> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| CidrError::Address(text.to_owned()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| CidrError::Prefix(text.to_owned()))?,
        None => max,
    };
    Ok((ip, len))
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_str_at(&text, path)
    }

    /// Parses and validates configuration text that came from `path`.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let key = if key == "." { String::new() } else { key };
            let message = inner.message().to_string();
            ConfigError {
                file: path.to_path_buf(),
                line: inner.span().map(|s| line_of(text, s.start)),
                key,
                message,
            }
        })?;
        config.source = path.to_path_buf();
        config.validate().map_err(|(key, message)| ConfigError {
            file: path.to_path_buf(),
            line: line_of_key(text, &key),
            key,
            message,
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot: ranges, references, duplicates.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        self.mediaserver.validate()?;
        if self.mediaserver.answers_calls() && self.node.mode != Mode::B2bua {
            return err(
                "mediaserver",
                "the media server answers calls in mode = \"b2bua\" only".into(),
            );
        }
        if self.sip.listen.is_empty() {
            return err("sip.listen", "at least one listener is required".into());
        }
        if self.dataplane.io == IoDriver::AfXdp && self.dataplane.interface.is_none() {
            return err(
                "dataplane.interface",
                "io = \"af_xdp\" needs the link to take packets from (interface = \"eth0\")".into(),
            );
        }
        if self.tls.is_none()
            && let Some(i) = self.sip.listen.iter().position(|l| l.transport.secure())
        {
            return err(
                &format!("sip.listen[{i}].transport"),
                "a TLS or WSS listener needs [tls] certificate and key".into(),
            );
        }
        if self.capture.hep_sample_pct > 100 {
            return err(
                "capture.hep_sample_pct",
                format!(
                    "{} is not a percentage (0-100)",
                    self.capture.hep_sample_pct
                ),
            );
        }
        if self
            .capture
            .hep
            .is_some_and(|a| a.port() == 0 || a.ip().is_unspecified())
        {
            return err(
                "capture.hep",
                "the collector needs an address and a port (\"127.0.0.1:9060\")".into(),
            );
        }
        for (i, l) in self.sip.listen.iter().enumerate() {
            if l.address.port() == 0 {
                return err(
                    &format!("sip.listen[{i}].address"),
                    "port 0 is not allowed".into(),
                );
            }
            if self.sip.listen[..i]
                .iter()
                .any(|o| o.address == l.address && o.transport == l.transport)
            {
                return err(
                    &format!("sip.listen[{i}].address"),
                    format!("{} is listed twice", l.address),
                );
            }
            if let Some(r) = &l.realm
                && !self.realms.iter().any(|x| &x.name == r)
            {
                return err(
                    &format!("sip.listen[{i}].realm"),
                    format!("no realm named {r:?}"),
                );
            }
        }
        if !(1_500..=16 << 20).contains(&self.sip.max_message_size) {
            return err(
                "sip.max_message_size",
                "must be between 1500 and 16777216".into(),
            );
        }
        if !(256..=1 << 20).contains(&self.sip.max_line_length) {
            return err(
                "sip.max_line_length",
                "must be between 256 and 1048576".into(),
            );
        }
        if !(16..=4096).contains(&self.sip.max_headers) {
            return err("sip.max_headers", "must be between 16 and 4096".into());
        }
        match &self.dataplane.cores {
            Cores::Named(n) if n != "all" => {
                return err(
                    "dataplane.cores",
                    format!("must be \"all\" or a list of core ids, not {n:?}"),
                );
            }
            Cores::List(l) if l.is_empty() => {
                return err("dataplane.cores", "the list is empty".into());
            }
            Cores::List(l) => {
                for (i, c) in l.iter().enumerate() {
                    if l[..i].contains(c) {
                        return err("dataplane.cores", format!("core {c} is listed twice"));
                    }
                }
            }
            _ => {}
        }
        let m = &self.media;
        for (i, r) in self.realms.iter().enumerate() {
            if let Some(a) = r.media_address
                && !a.is_ipv4()
            {
                return err(
                    &format!("realms[{i}].media_address"),
                    format!("{a} is not an IPv4 address (media_address_v6 is the IPv6 one)"),
                );
            }
            if let Some(a) = r.media_address_v6
                && !a.is_ipv6()
            {
                return err(
                    &format!("realms[{i}].media_address_v6"),
                    format!("{a} is not an IPv6 address"),
                );
            }
        }
        if let Some(v6) = m.address_v6
            && !v6.is_ipv6()
        {
            return err(
                "media.address_v6",
                format!("{v6} is not an IPv6 address (media.address is the IPv4 one)"),
            );
        }
        if m.port_min == 0 || !m.port_min.is_multiple_of(2) {
            return err(
                "media.port_min",
                format!("must be an even port above 0, not {}", m.port_min),
            );
        }
        if m.port_min >= m.port_max {
            return err(
                "media.port_min",
                format!(
                    "must be below media.port_max ({} >= {})",
                    m.port_min, m.port_max
                ),
            );
        }
        for (key, window) in [
            (
                "controlplane.batch_wait_us",
                Some(self.controlplane.batch_wait_us),
            ),
            (
                "dataplane.batch_wait_us",
                Some(self.dataplane.batch_wait_us),
            ),
            (
                "dataplane.sip_batch_wait_us",
                self.dataplane.sip_batch_wait_us,
            ),
        ] {
            if window.is_some_and(|w| w > 10_000) {
                return err(key, "must be at most 10000 (10 ms)".into());
            }
        }
        if m.timeout_secs == 0 {
            return err("media.timeout_secs", "must be at least 1".into());
        }
        if !(6000..=510_000).contains(&m.opus.bitrate) {
            return err("media.opus.bitrate", "must be 6000 to 510000".into());
        }
        if m.opus.complexity > 10 {
            return err("media.opus.complexity", "must be 0 to 10".into());
        }
        if m.opus.expected_loss_pct > 100 {
            return err("media.opus.expected_loss_pct", "must be 0 to 100".into());
        }
        if self.overload.media_busy_pct > 100 {
            return err(
                "overload.media_busy_pct",
                "must be between 0 (off) and 100".into(),
            );
        }
        if self.overload.retry_after_secs == 0 {
            return err("overload.retry_after_secs", "must be at least 1".into());
        }
        for (j, a) in self.proxy.trusted_sources.iter().enumerate() {
            parse_cidr(a).map_err(|e| (format!("proxy.trusted_sources[{j}]"), e.to_string()))?;
        }
        for (i, r) in self.realms.iter().enumerate() {
            if self.realms[..i].iter().any(|o| o.name == r.name) {
                return err(
                    &format!("realms[{i}].name"),
                    format!("realm {:?} is defined twice", r.name),
                );
            }
            for (j, a) in r.allow.iter().enumerate() {
                parse_cidr(a).map_err(|e| (format!("realms[{i}].allow[{j}]"), e.to_string()))?;
            }
        }
        for (i, r) in self.proxy.routes.iter().enumerate() {
            match (&r.target, &r.uri) {
                (Some(_), None) => {}
                (None, Some(u)) => {
                    crate::dns::check_uri(u).map_err(|e| (format!("proxy.routes[{i}].uri"), e))?
                }
                _ => {
                    return err(
                        &format!("proxy.routes[{i}]"),
                        "needs one next hop: target = \"IP:PORT\" or uri = \"sip:NAME\"".into(),
                    );
                }
            }
        }
        for (i, t) in self.trunks.iter().enumerate() {
            if self.trunks[..i].iter().any(|o| o.name == t.name) {
                return err(
                    &format!("trunks[{i}].name"),
                    format!("trunk {:?} is defined twice", t.name),
                );
            }
            if !self.realms.iter().any(|r| r.name == t.realm) {
                return err(
                    &format!("trunks[{i}].realm"),
                    format!("no realm named {:?}", t.realm),
                );
            }
            if t.targets.is_empty() {
                return err(
                    &format!("trunks[{i}].targets"),
                    "at least one target is required".into(),
                );
            }
            for (j, target) in t.targets.iter().enumerate() {
                if let crate::sbc::TargetSpec::Uri(u) = target {
                    crate::dns::check_uri(&u.uri)
                        .map_err(|e| (format!("trunks[{i}].targets[{j}].uri"), e))?;
                    continue;
                }
                let Some(target) = target.resolve(j) else {
                    continue;
                };
                if target.address.port() == 0 || target.address.ip().is_unspecified() {
                    return err(
                        &format!("trunks[{i}].targets[{j}]"),
                        format!("{} is not a peer address", target.address),
                    );
                }
                if target.weight == 0 && t.policy == crate::sbc::Dispatch::Weighted {
                    return err(
                        &format!("trunks[{i}].targets[{j}].weight"),
                        "must be at least 1".into(),
                    );
                }
            }
            if !(0.1..=60.0).contains(&t.invite_timeout_secs) {
                return err(
                    &format!("trunks[{i}].invite_timeout_secs"),
                    "must be between 0.1 and 60".into(),
                );
            }
            for (j, h) in t.headers.iter().enumerate() {
                crate::sbc::check_rule(h)
                    .map_err(|e| (format!("trunks[{i}].headers[{j}]"), e.to_string()))?;
            }
        }
        self.dns.validate()?;
        if self.node.mode == Mode::B2bua {
            crate::sbc::validate(self)?;
        }
        if !(64..=1 << 20).contains(&self.controlplane.ring_slots)
            || !self.controlplane.ring_slots.is_power_of_two()
        {
            return err(
                "controlplane.ring_slots",
                "must be a power of two between 64 and 1048576".into(),
            );
        }
        if !(1..=32).contains(&self.controlplane.shards) {
            return err("controlplane.shards", "must be between 1 and 32".into());
        }
        let r = &self.registrar;
        if r.min_expires == 0 || r.min_expires > r.max_expires {
            return err(
                "registrar.min_expires",
                format!(
                    "must be between 1 and registrar.max_expires ({})",
                    r.max_expires
                ),
            );
        }
        if r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            return err(
                "registrar.default_expires",
                "must lie between registrar.min_expires and registrar.max_expires".into(),
            );
        }
        if r.digest_algorithms.is_empty() {
            return err(
                "registrar.digest_algorithms",
                "name at least one of \"MD5\", \"SHA-256\"".into(),
            );
        }
        for (i, a) in r.digest_algorithms.iter().enumerate() {
            if r.digest_algorithms[..i].contains(a) {
                return err(
                    "registrar.digest_algorithms",
                    format!("{a:?} is listed twice"),
                );
            }
        }
        if r.auth_failures_before_ban > 0
            && (r.auth_failure_window_secs == 0 || r.auth_ban_secs == 0)
        {
            return err(
                "registrar.auth_ban_secs",
                "auth_ban_secs and auth_failure_window_secs must be at least 1 while auth_failures_before_ban is set".into(),
            );
        }
        if r.auth != AuthMode::Off && r.users_file.is_none() {
            return err(
                "registrar.auth",
                "authentication needs registrar.users_file".into(),
            );
        }
        if let Some(f) = &r.users_file
            && !self.resolve(f).is_file()
        {
            return err(
                "registrar.users_file",
                format!("{} does not exist", self.resolve(f).display()),
            );
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            return err(
                "log.level",
                format!(
                    "must be error, warn, info, debug or trace, not {:?}",
                    self.log.level
                ),
            );
        }
        Ok(())
    }

    /// Every address the relay may open endpoints on: `[media] address`,
    /// `address_v6` and the realms' own.
    pub fn media_addresses(&self) -> Vec<IpAddr> {
        let mut all = vec![self.media.address];
        let realms = self
            .realms
            .iter()
            .flat_map(|r| [r.media_address, r.media_address_v6]);
        for a in std::iter::once(self.media.address_v6)
            .chain(realms)
            .flatten()
        {
            if !all.contains(&a) {
                all.push(a);
            }
        }
        all
    }

    /// Checks what only this host can tell: the media address is one of its
    /// own (a relay bound elsewhere would take no packet), and every file
    /// the configuration names is where it says (the users file is read, a
    /// CDR file's directory exists). Run by `rvoip config-check` and at
    /// every start; the users file's content is checked by its reader.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&self.source).unwrap_or_default();
        let err = |key: &str, message: String| ConfigError {
            file: self.source.clone(),
            line: line_of_key(&text, key),
            key: key.to_string(),
            message,
        };
        let realm_addresses = self.realms.iter().enumerate().flat_map(|(i, r)| {
            [
                r.media_address
                    .map(|a| (format!("realms[{i}].media_address"), a)),
                r.media_address_v6
                    .map(|a| (format!("realms[{i}].media_address_v6"), a)),
            ]
        });
        for (key, a) in self
            .media
            .address_v6
            .map(|a| ("media.address_v6".to_string(), a))
            .into_iter()
            .chain(realm_addresses.flatten())
        {
            if let Err(e) = std::net::UdpSocket::bind((a, 0)) {
                return Err(err(
                    &key,
                    format!("{a} is not an address of this host ({e})"),
                ));
            }
        }
        let probe = std::net::UdpSocket::bind((self.media.address, 0));
        if let Err(e) = probe {
            return Err(err(
                "media.address",
                format!(
                    "{} is not an address of this host ({e}); media.advertised_address is the one for the outside",
                    self.media.address
                ),
            ));
        }
        if let Some(f) = &self.registrar.users_file
            && let Err(e) = std::fs::File::open(self.resolve(f))
        {
            return Err(err(
                "registrar.users_file",
                format!("{}: cannot read: {e}", self.resolve(f).display()),
            ));
        }
        if let Some(f) = &self.sbc.cdr_file {
            let path = self.resolve(f);
            // A bare file name (a configuration read from the working
            // directory) has an empty parent: the working directory.
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(err(
                    "sbc.cdr_file",
                    format!(
                        "{}: directory {} does not exist",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A path from the file, resolved against the file's directory: every
    /// path key (state_dir, users_file, cdr_file) is read this way.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Where `rvoip ctl capture` writes its pcap files.
    pub fn pcap_dir(&self) -> PathBuf {
        match &self.capture.pcap_dir {
            Some(d) => self.resolve(d),
            None => self.resolve(&self.node.state_dir).join("captures"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
mode = "proxy"

[sip]
listen = [{ address = "127.0.0.1:5060", transport = "udp" }]

[media]
address = "127.0.0.1"
port_min = 30000
port_max = 39999
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_str_at(text, Path::new("/etc/rvoip/test.toml"))
    }

    #[test]
    fn af_xdp_is_chosen_by_name_with_its_link() {
        let dp = |extra: &str| load(&format!("{GOOD}\n[dataplane]\n{extra}\n"));
        let c = dp("io = \"af_xdp\"\ninterface = \"rvx0\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.dataplane.io, IoDriver::AfXdp);
        assert_eq!(c.dataplane.interface.as_deref(), Some("rvx0"));
        let e = dp("io = \"af_xdp\"")
            .err()
            .unwrap_or_else(|| panic!("af_xdp without a link"));
        assert_eq!(e.key, "dataplane.interface");
        assert!(dp("io = \"af-xdp\"").is_err());
        assert_eq!(
            load(GOOD).map(|c| c.dataplane.io).ok(),
            Some(IoDriver::Auto)
        );
    }

    #[test]
    fn control_plane_shards_are_bounded() {
        let cp = |text: &str, n: &str| load(&format!("{text}\n[controlplane]\nshards = {n}\n"));
        assert_eq!(load(GOOD).map(|c| c.controlplane.shards).ok(), Some(1));
        assert_eq!(cp(GOOD, "4").map(|c| c.controlplane.shards).ok(), Some(4));
        for n in ["0", "33"] {
            let e = cp(GOOD, n).err().unwrap_or_else(|| panic!("{n} shards"));
            assert_eq!(e.key, "controlplane.shards");
        }
    }

    #[test]
    fn names_and_addresses_of_families_are_checked() {
        let route = |r: &str| load(&format!("{GOOD}\n[[proxy.routes]]\n{r}\n"));
        assert!(route("uri = \"sip:edge.carrier.example\"").is_ok());
        assert!(route("target = \"127.0.0.1:5070\"").is_ok());
        let e = route("domain = \"x\"")
            .err()
            .unwrap_or_else(|| panic!("no next hop"));
        assert_eq!(e.key, "proxy.routes[0]");
        let e = route("uri = \"http://x\"")
            .err()
            .unwrap_or_else(|| panic!("not sip"));
        assert_eq!(e.key, "proxy.routes[0].uri");
        let media = |extra: &str| {
            load(&GOOD.replace(
                "address = \"127.0.0.1\"\n",
                &format!("address = \"127.0.0.1\"\n{extra}\n"),
            ))
        };
        assert!(media("address_v6 = \"::1\"").is_ok());
        let e = media("address_v6 = \"127.0.0.2\"")
            .err()
            .unwrap_or_else(|| panic!("v4 as v6"));
        assert_eq!(e.key, "media.address_v6");
        let c = load(&format!(
            "{GOOD}\n[dns]\nservers = [\"127.0.0.1:5353\"]\navoid_secs = 5\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.dns.servers.len(), c.dns.avoid_secs, c.dns.max_outstanding),
            (1, 5, 256)
        );
        let e = load(&format!("{GOOD}\n[dns]\ntimeout_ms = 5\n"))
            .err()
            .unwrap_or_else(|| panic!("5 ms"));
        assert_eq!(e.key, "dns.timeout_ms");
    }

    #[test]
    fn defaults_fill_in() {
        let c = load(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sip.max_headers, 256);
        assert_eq!(c.dataplane.cores, Cores::Named("all".into()));
        assert_eq!(
            c.resolve(&c.node.state_dir),
            PathBuf::from("/etc/rvoip/state")
        );
        assert_eq!(c.pcap_dir(), PathBuf::from("/etc/rvoip/state/captures"));
    }

    #[test]
    fn the_opus_encoder_is_set_in_media_opus_and_checked() {
        let c = load(GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.media.opus, OpusConfig::default());
        assert_eq!(
            (c.media.opus.bitrate, c.media.opus.complexity),
            (24_000, 10)
        );
        let text = format!("{GOOD}\n[media.opus]\nbitrate = 32000\ndtx = true\n");
        let c = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.media.opus.bitrate, c.media.opus.dtx), (32_000, true));
        let e = load(&format!("{GOOD}\n[media.opus]\ncomplexity = 11\n"))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.key, "media.opus.complexity");
        let e = load(&format!("{GOOD}\n[media.opus]\nbitrate = 1000\n"))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.key, "media.opus.bitrate");
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let text = GOOD.replace("port_max = 39999", "port_max = 39999\nport_maks = 1");
        let e = load(&text).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.key, "media.port_maks");
        assert_eq!(e.line, Some(12));
        assert!(
            e.to_string()
                .starts_with("/etc/rvoip/test.toml:12: media.port_maks: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load(&GOOD.replace("127.0.0.1:5060", "127.0.0.1:99999"))
            .err()
            .unwrap_or_else(|| panic!());
        assert_eq!(e.key, "sip.listen[0].address");
        let e = load(&GOOD.replace("port_min = 30000", "port_min = 40000"))
            .err()
            .unwrap_or_else(|| panic!());
        assert_eq!(e.key, "media.port_min");
        assert_eq!(e.line, Some(10));
        assert!(e.message.contains("below media.port_max"));
        let e = load(&GOOD.replace("\"proxy\"", "\"gateway\""))
            .err()
            .unwrap_or_else(|| panic!());
        assert_eq!(e.key, "node.mode");
        let e = load(&format!(
            "{GOOD}\n[[trunks]]\nname = \"t\"\nrealm = \"core\"\ntargets = [\"127.0.0.1:5070\"]\n"
        ))
        .err()
        .unwrap_or_else(|| panic!());
        assert_eq!(e.key, "trunks[0].realm");
        for (table, key) in [
            ("dataplane", "sip_batch_wait_us"),
            ("dataplane", "batch_wait_us"),
            ("controlplane", "batch_wait_us"),
        ] {
            let e = load(&format!("{GOOD}\n[{table}]\n{key} = 20000\n"))
                .err()
                .unwrap_or_else(|| panic!("{table}.{key} = 20000 accepted"));
            assert_eq!(e.key, format!("{table}.{key}"));
            assert!(e.message.contains("at most 10000"), "{e}");
        }
    }

    #[test]
    fn the_sip_workers_batch_window_is_the_dataplanes_unless_set() {
        let c = load(&format!("{GOOD}\n[dataplane]\nbatch_wait_us = 300\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.dataplane.sip_batch_wait_us(), 300);
        let c = load(&format!(
            "{GOOD}\n[dataplane]\nbatch_wait_us = 300\nsip_batch_wait_us = 900\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.dataplane.batch_wait_us, c.dataplane.sip_batch_wait_us()),
            (300, 900)
        );
    }
}
