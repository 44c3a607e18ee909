//! What `/metrics` shows, and how it is gathered without slowing the
//! packet path:
//! - the control plane counts as it goes, in its own thread's plain
//!   integers ([`SipTally`] for messages by method and status, the B2BUA's
//!   [`CallTally`] for calls by realm and trunk, [`Histograms`] of ended
//!   calls), and once a second copies them into a [`Snapshot`] that the
//!   ops thread reads;
//! - the dataplane's workers keep their own counters and the dataplane
//!   copies them into its `stats` file (`rvoip_dataplane::shm::stats`),
//!   read at scrape time.
//!
//! [`families`] turns both into metric families, which the `prometheus`
//! crate writes in the text exposition format.

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use rvoip_dataplane::shm::stats::{Kind, Slot};

use crate::sbc::cdr::Cdr;

/// SIP methods counted by name; others count as `other`.
pub const METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Received from the network.
    In = 0,
    /// Sent to it.
    Out = 1,
}

/// SIP messages by method (requests) and status code (responses), each way.
#[derive(Debug, Clone)]
pub struct SipTally {
    requests: [[u64; 2]; 15],
    /// Index: status code − 100 (100..=699).
    responses: Vec<[u64; 2]>,
}

impl Default for SipTally {
    fn default() -> Self {
        SipTally {
            requests: [[0; 2]; 15],
            responses: vec![[0; 2]; 600],
        }
    }
}

impl SipTally {
    /// Counts one message by its start line (no parsing beyond it).
    pub fn count(&mut self, way: Way, bytes: &[u8]) {
        if let Some(rest) = bytes.strip_prefix(b"SIP/2.0 ") {
            let code = rest
                .get(..3)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse::<usize>().ok())
                .filter(|c| (100..700).contains(c));
            if let Some(c) = code {
                self.responses[c - 100][way as usize] += 1;
            }
            return;
        }
        let method = bytes.split(|b| *b == b' ').next().unwrap_or_default();
        let i = METHODS
            .iter()
            .position(|m| m.as_bytes() == method)
            .unwrap_or(METHODS.len() - 1);
        self.requests[i][way as usize] += 1;
    }

    /// Adds another tally's counts to these.
    pub fn merge(&mut self, other: &SipTally) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            mine[0] += theirs[0];
            mine[1] += theirs[1];
        }
        for (mine, theirs) in self.responses.iter_mut().zip(&other.responses) {
            mine[0] += theirs[0];
            mine[1] += theirs[1];
        }
    }

    /// Requests of `method` (one of [`METHODS`]) seen `way`.
    pub fn requests(&self, method: &str, way: Way) -> u64 {
        METHODS
            .iter()
            .position(|m| *m == method)
            .map_or(0, |i| self.requests[i][way as usize])
    }

    /// Responses with `code` seen `way`.
    pub fn responses(&self, code: u16, way: Way) -> u64 {
        self.responses
            .get(usize::from(code).wrapping_sub(100))
            .map_or(0, |r| r[way as usize])
    }
}

/// Calls of one realm and trunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls admitted.
    pub started: u64,
    /// Calls answered (2xx to the caller).
    pub answered: u64,
    /// Calls that ended unanswered, by the class of the caller's final
    /// status: 3xx, 4xx, 5xx, 6xx (index 0..4), none sent (4).
    pub failed: [u64; 5],
    /// Calls up or being set up now.
    pub active: u64,
}

impl CallCounts {
    /// Adds another shard's counts of the same realm and trunk.
    pub fn merge(&mut self, other: &CallCounts) {
        self.started += other.started;
        self.answered += other.answered;
        for (mine, theirs) in self.failed.iter_mut().zip(&other.failed) {
            *mine += theirs;
        }
        self.active += other.active;
    }
}

/// Status classes of failed calls, as labelled.
pub const CLASSES: [&str; 5] = ["3xx", "4xx", "5xx", "6xx", "none"];

/// Calls by the realm they came from and the trunk they went to (index
/// `realms × (trunks + 1)`: the last trunk column is "none", for calls the
/// media server answers or that ended before a trunk was chosen).
#[derive(Debug, Clone, Default)]
pub struct CallTally {
    trunks: usize,
    counts: Vec<CallCounts>,
}

impl CallTally {
    /// A tally for `realms` realms and `trunks` trunks.
    pub fn new(realms: usize, trunks: usize) -> CallTally {
        CallTally {
            trunks,
            counts: vec![CallCounts::default(); realms * (trunks + 1)],
        }
    }

    fn at(&mut self, realm: usize, trunk: Option<usize>) -> Option<&mut CallCounts> {
        let t = trunk.filter(|t| *t < self.trunks).unwrap_or(self.trunks);
        self.counts.get_mut(realm * (self.trunks + 1) + t)
    }

    /// A call admitted.
    pub fn started(&mut self, realm: usize, trunk: Option<usize>) {
        if let Some(c) = self.at(realm, trunk) {
            c.started += 1;
            c.active += 1;
        }
    }

    /// A call answered.
    pub fn answered(&mut self, realm: usize, trunk: Option<usize>) {
        if let Some(c) = self.at(realm, trunk) {
            c.answered += 1;
        }
    }

    /// A call ended; `status` is the caller's final status (0: none sent).
    pub fn ended(&mut self, realm: usize, trunk: Option<usize>, answered: bool, status: u16) {
        if let Some(c) = self.at(realm, trunk) {
            c.active = c.active.saturating_sub(1);
            if !answered {
                let class = match status {
                    300..=699 => usize::from(status / 100 - 3),
                    _ => 4,
                };
                c.failed[class] += 1;
            }
        }
    }

    /// Takes `old`'s counts, each row moved to where `to` says its realm
    /// and trunk are now (rows it gives no place are dropped).
    pub fn take_over(
        &mut self,
        old: &CallTally,
        to: impl Fn(usize, Option<usize>) -> Option<(usize, Option<usize>)>,
    ) {
        for (realm, trunk, c) in old.rows() {
            if let Some((r, t)) = to(realm, trunk)
                && let Some(slot) = self.at(r, t)
            {
                *slot = *c;
            }
        }
    }

    /// Every (realm, trunk) pair with its counts; `None` is no trunk.
    pub fn rows(&self) -> impl Iterator<Item = (usize, Option<usize>, &CallCounts)> {
        let w = self.trunks + 1;
        self.counts.iter().enumerate().map(move |(i, c)| {
            let t = i % w;
            (i / w, (t < self.trunks).then_some(t), c)
        })
    }
}

/// A histogram of fixed buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts `v`.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// Adds another histogram of the same buckets.
    fn merge(&mut self, other: &Buckets) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// Values observed.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn proto(&self) -> Histogram {
        let mut h = Histogram::default();
        h.set_sample_count(self.count);
        h.set_sample_sum(self.sum);
        let mut cumulative = 0;
        h.set_bucket(
            self.bounds
                .iter()
                .zip(&self.counts)
                .map(|(b, c)| {
                    cumulative += c;
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(*b);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect(),
        );
        h
    }
}

const SECONDS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];
const MOS: &[f64] = &[1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5];
const RATIO: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
const JITTER: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];

/// Histograms of ended calls, from their CDRs.
#[derive(Debug, Clone, PartialEq)]
pub struct Histograms {
    /// INVITE to answer, answered calls (seconds).
    pub setup: Buckets,
    /// INVITE to the first ringing (18x), or to the final answer when none
    /// came: post-dial delay (seconds).
    pub post_dial: Buckets,
    /// Estimated MOS of calls with media.
    pub mos: Buckets,
    /// Packet loss ratio of calls with media.
    pub loss: Buckets,
    /// Interarrival jitter at the end of calls with media (seconds).
    pub jitter: Buckets,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            setup: Buckets::new(SECONDS),
            post_dial: Buckets::new(SECONDS),
            mos: Buckets::new(MOS),
            loss: Buckets::new(RATIO),
            jitter: Buckets::new(JITTER),
        }
    }
}

impl Histograms {
    /// Adds another shard's ended calls.
    pub fn merge(&mut self, other: &Histograms) {
        self.setup.merge(&other.setup);
        self.post_dial.merge(&other.post_dial);
        self.mos.merge(&other.mos);
        self.loss.merge(&other.loss);
        self.jitter.merge(&other.jitter);
    }

    /// Counts an ended call.
    pub fn observe(&mut self, cdr: &Cdr) {
        let secs = |t: u64| t.saturating_sub(cdr.invite_ms) as f64 / 1000.0;
        if let Some(a) = cdr.answer_ms {
            self.setup.observe(secs(a));
        }
        if let Some(r) = cdr.ringing_ms.or(cdr.answer_ms) {
            self.post_dial.observe(secs(r));
        } else if cdr.a_status >= 300 {
            self.post_dial.observe(secs(cdr.end_ms));
        }
        let m = &cdr.media;
        if m.expected > 0 {
            let loss = m.lost as f64 / m.expected as f64;
            let jitter = m.jitter_us as f64 / 1e6;
            self.loss.observe(loss);
            self.jitter.observe(jitter);
            self.mos.observe(mos(loss, jitter));
        }
    }
}

/// The MOS a listener would give a G.711 call with this packet loss ratio
/// and interarrival jitter: ITU-T G.107's E-model with default values but
/// for loss (Ie,eff with Bpl 25.1, G.113 Appendix I for G.711 with
/// concealment) and delay (a jitter buffer of twice the jitter plus one
/// 20 ms packet; Id of G.107 simplified, one-way).
pub fn mos(loss: f64, jitter_s: f64) -> f64 {
    let ppl = (loss * 100.0).clamp(0.0, 100.0);
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    let d = (2.0 * jitter_s * 1000.0 + 20.0).max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// A shared-memory ring between a SIP worker and the control plane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingRow {
    /// Slots in use towards the control plane.
    pub to_control_plane: u64,
    /// Slots in use towards the dataplane.
    pub to_dataplane: u64,
    /// Records the control plane could not push (ring full).
    pub refused: u64,
}

/// What the control plane publishes once a second.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Node name (a label on `rvoip_info`).
    pub node: String,
    /// Messages by method and status.
    pub sip: SipTally,
    /// Calls by realm and trunk: the names, then the counts.
    pub calls: Vec<(String, String, CallCounts)>,
    /// Ended calls.
    pub histograms: Histograms,
    /// Messages and calls the control plane refused or dropped, by reason.
    pub drops: Vec<(&'static str, u64)>,
    /// The rings, by worker.
    pub rings: Vec<RingRow>,
    /// Registered contacts.
    pub registrations: u64,
    /// Name lookups: (kind, count).
    pub dns: Vec<(&'static str, u64)>,
    /// Seconds the control plane has run.
    pub uptime_s: f64,
}

impl Snapshot {
    /// Adds another control-plane shard's figures to these (its rings are
    /// the same workers' channels to that shard: their slots add up).
    pub fn merge(&mut self, other: &Snapshot) {
        self.sip.merge(&other.sip);
        for (realm, trunk, counts) in &other.calls {
            match self
                .calls
                .iter_mut()
                .find(|(r, t, _)| r == realm && t == trunk)
            {
                Some((_, _, c)) => c.merge(counts),
                None => self.calls.push((realm.clone(), trunk.clone(), *counts)),
            }
        }
        self.histograms.merge(&other.histograms);
        for (name, v) in &other.drops {
            match self.drops.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => *mine += v,
                None => self.drops.push((name, *v)),
            }
        }
        for (mine, theirs) in self.rings.iter_mut().zip(&other.rings) {
            mine.to_control_plane += theirs.to_control_plane;
            mine.to_dataplane += theirs.to_dataplane;
            mine.refused += theirs.refused;
        }
        self.registrations += other.registrations;
        for (name, v) in &other.dns {
            match self.dns.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => *mine += v,
                None => self.dns.push((name, *v)),
            }
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_string());
            l.set_value((*v).to_string());
            l
        })
        .collect()
}

/// A family being written.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        Family(f)
    }

    fn counter(mut self, pairs: &[(&str, &str)], v: u64) -> Family {
        let mut c = Counter::default();
        c.set_value(v as f64);
        let mut m = Metric::from_label(labels(pairs));
        m.set_counter(c);
        self.0.mut_metric().push(m);
        self
    }

    fn gauge(mut self, pairs: &[(&str, &str)], v: f64) -> Family {
        let mut g = Gauge::default();
        g.set_value(v);
        let mut m = Metric::from_label(labels(pairs));
        m.set_gauge(g);
        self.0.mut_metric().push(m);
        self
    }

    fn histogram(mut self, b: &Buckets) -> Family {
        let mut m = Metric::default();
        m.set_histogram(b.proto());
        self.0.mut_metric().push(m);
        self
    }
}

/// The metric families of a snapshot (none before the first) and of the
/// dataplane's slots.
pub fn families(snap: Option<&Snapshot>, dataplane: &[Slot]) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut out: Vec<Family> = Vec::new();
    if let Some(s) = snap {
        out.push(
            Family::new("rvoip_info", "The node, as configured.", GAUGE)
                .gauge(&[("node", &s.node)], 1.0),
        );
        out.push(
            Family::new(
                "rvoip_controlplane_uptime_seconds",
                "Seconds the control plane has run.",
                GAUGE,
            )
            .gauge(&[], s.uptime_s),
        );
        let mut started = Family::new("rvoip_calls_started_total", "Calls admitted.", COUNTER);
        let mut answered = Family::new("rvoip_calls_answered_total", "Calls answered.", COUNTER);
        let mut failed = Family::new(
            "rvoip_calls_failed_total",
            "Calls ended unanswered, by the class of the caller's final status.",
            COUNTER,
        );
        let mut active = Family::new("rvoip_calls_active", "Calls up or being set up.", GAUGE);
        for (realm, trunk, c) in &s.calls {
            let l = [("realm", realm.as_str()), ("trunk", trunk.as_str())];
            started = started.counter(&l, c.started);
            answered = answered.counter(&l, c.answered);
            active = active.gauge(&l, c.active as f64);
            for (class, n) in CLASSES.iter().zip(c.failed) {
                failed = failed.counter(&[l[0], l[1], ("class", class)], n);
            }
        }
        out.extend([started, answered, failed, active]);
        let mut requests = Family::new(
            "rvoip_sip_requests_total",
            "SIP requests by method, received (in) and sent (out).",
            COUNTER,
        );
        let mut responses = Family::new(
            "rvoip_sip_responses_total",
            "SIP responses by status code, received (in) and sent (out).",
            COUNTER,
        );
        for (way, name) in [(Way::In, "in"), (Way::Out, "out")] {
            for m in METHODS {
                requests = requests.counter(
                    &[("direction", name), ("method", m)],
                    s.sip.requests(m, way),
                );
            }
            for code in 100..700u16 {
                let n = s.sip.responses(code, way);
                if n > 0 {
                    responses =
                        responses.counter(&[("direction", name), ("status", &code.to_string())], n);
                }
            }
        }
        out.extend([requests, responses]);
        let h = &s.histograms;
        for (name, help, b) in [
            (
                "rvoip_call_setup_seconds",
                "INVITE to answer of answered calls.",
                &h.setup,
            ),
            (
                "rvoip_call_post_dial_delay_seconds",
                "INVITE to the first ringing (or the final answer).",
                &h.post_dial,
            ),
            (
                "rvoip_call_mos",
                "Estimated MOS (E-model) of ended calls with media.",
                &h.mos,
            ),
            (
                "rvoip_call_loss_ratio",
                "Packet loss of ended calls with media.",
                &h.loss,
            ),
            (
                "rvoip_call_jitter_seconds",
                "Interarrival jitter at the end of calls with media.",
                &h.jitter,
            ),
        ] {
            out.push(Family::new(name, help, HISTOGRAM).histogram(b));
        }
        let mut depth = Family::new(
            "rvoip_ring_depth",
            "Records waiting in each shared-memory ring.",
            GAUGE,
        );
        let mut refused = Family::new(
            "rvoip_ring_refusals_total",
            "Records refused because a ring was full.",
            COUNTER,
        );
        for (w, r) in s.rings.iter().enumerate() {
            let w = w.to_string();
            depth = depth
                .gauge(
                    &[("worker", &w), ("direction", "to_controlplane")],
                    r.to_control_plane as f64,
                )
                .gauge(
                    &[("worker", &w), ("direction", "to_dataplane")],
                    r.to_dataplane as f64,
                );
            refused = refused.counter(&[("worker", &w), ("direction", "to_dataplane")], r.refused);
        }
        for slot in dataplane.iter().filter(|s| s.kind == Kind::Sip) {
            refused = refused.counter(
                &[
                    ("worker", &slot.worker.to_string()),
                    ("direction", "to_controlplane"),
                ],
                slot.get("ring_full"),
            );
        }
        out.extend([depth, refused]);
        out.push(
            Family::new("rvoip_registrations", "Registered contacts.", GAUGE)
                .gauge(&[], s.registrations as f64),
        );
        let mut dns = Family::new(
            "rvoip_dns_lookups_total",
            "Name resolutions by outcome.",
            COUNTER,
        );
        for (kind, n) in &s.dns {
            dns = dns.counter(&[("outcome", kind)], *n);
        }
        out.push(dns);
    }
    let mut drops = Family::new(
        "rvoip_drops_total",
        "Messages, requests and packets refused or dropped, by plane and reason.",
        COUNTER,
    );
    if let Some(s) = snap {
        for (reason, n) in &s.drops {
            drops = drops.counter(&[("plane", "control"), ("reason", reason)], *n);
        }
    }
    let sum = |kind: Kind, field: &str| -> u64 {
        dataplane
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.get(field))
            .sum()
    };
    for reason in [
        "unparsable",
        "malformed_requests",
        "malformed_responses",
        "unavailable",
        "dropped",
        "rate_limited",
        "ring_full",
        "oversized",
    ] {
        drops = drops.counter(
            &[("plane", "sip"), ("reason", reason)],
            sum(Kind::Sip, reason),
        );
    }
    for reason in [
        "unknown_endpoint",
        "malformed",
        "wrong_source",
        "no_destination",
    ] {
        drops = drops.counter(
            &[("plane", "media"), ("reason", reason)],
            sum(Kind::Media, reason),
        );
    }
    out.push(drops);
    let mut received = Family::new(
        "rvoip_sip_datagrams_received_total",
        "SIP messages the dataplane's workers received.",
        COUNTER,
    );
    let mut sent = Family::new(
        "rvoip_sip_datagrams_sent_total",
        "SIP messages the dataplane's workers sent.",
        COUNTER,
    );
    let mut packets = Family::new(
        "rvoip_media_packets_total",
        "Media packets relayed.",
        COUNTER,
    );
    let mut bytes = Family::new(
        "rvoip_media_bytes_total",
        "Octets of media packets relayed, as sent.",
        COUNTER,
    );
    let mut busy = Family::new(
        "rvoip_worker_busy_ratio",
        "Each dataplane worker's demand for its core over its last second (ran or waited to run).",
        GAUGE,
    );
    for slot in dataplane {
        let w = slot.worker.to_string();
        match slot.kind {
            Kind::Sip => {
                received = received.counter(&[("worker", &w)], slot.get("received"));
                sent = sent.counter(&[("worker", &w)], slot.get("sent"));
                busy = busy.gauge(
                    &[("kind", "sip"), ("worker", &w)],
                    slot.get("busy_permille") as f64 / 1000.0,
                );
            }
            Kind::Media => {
                packets = packets.counter(&[("worker", &w)], slot.get("forwarded"));
                bytes = bytes.counter(&[("worker", &w)], slot.get("forwarded_bytes"));
                busy = busy.gauge(
                    &[("kind", "media"), ("worker", &w)],
                    slot.get("busy_permille") as f64 / 1000.0,
                );
            }
        }
    }
    let mut srtp = Family::new(
        "rvoip_srtp_failures_total",
        "SRTP/SRTCP packets dropped, by reason.",
        COUNTER,
    );
    for reason in [
        "truncated",
        "malformed",
        "auth_failed",
        "replayed",
        "too_old",
        "unknown_mki",
        "key_expired",
        "no_room",
    ] {
        srtp = srtp.counter(
            &[("reason", reason)],
            sum(Kind::Media, &format!("srtp_{reason}")),
        );
    }
    let mut webrtc = Family::new(
        "rvoip_webrtc_events_total",
        "On WebRTC legs: ICE checks answered and refused, pairs rvoip nominated, DTLS handshakes keyed and failed, \
         packets held back from a peer without keys or consent, RTCP feedback messages \
         ended towards peers whose profile has none, and packets on a BUNDLE transport \
         that matched no media line.",
        COUNTER,
    );
    for (event, field) in [
        ("stun_answered", "stun_answered"),
        ("stun_refused", "stun_refused"),
        ("dtls_keyed", "dtls_keyed"),
        ("dtls_failed", "dtls_failed"),
        ("unkeyed_dropped", "webrtc_unkeyed"),
        ("rtcp_feedback_terminated", "rtcp_feedback_terminated"),
        ("ice_nominated", "ice_nominated"),
        ("bundle_unrouted", "bundle_unrouted"),
    ] {
        webrtc = webrtc.counter(&[("event", event)], sum(Kind::Media, field));
    }
    let mut hep = Family::new(
        "rvoip_hep_packets_total",
        "HEP capture packets the SIP workers sent to the collector, and lost.",
        COUNTER,
    );
    for (outcome, field) in [("sent", "hep_sent"), ("dropped", "hep_dropped")] {
        hep = hep.counter(&[("outcome", outcome)], sum(Kind::Sip, field));
    }
    out.extend([received, sent, packets, bytes, busy, srtp, webrtc, hep]);
    out.into_iter()
        .map(|f| f.0)
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// The counters as `rvoip ctl counters` prints them: the control plane's
/// snapshot and each dataplane worker's counters by name.
pub fn counters_json(snap: Option<&Snapshot>, dataplane: &[Slot]) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let workers: Vec<Value> = dataplane
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert(
                "kind".into(),
                json!(match s.kind {
                    Kind::Sip => "sip",
                    Kind::Media => "media",
                }),
            );
            m.insert("worker".into(), json!(s.worker));
            for (name, v) in s.kind.fields().iter().zip(&s.values) {
                m.insert((*name).into(), json!(v));
            }
            Value::Object(m)
        })
        .collect();
    let Some(s) = snap else {
        return json!({"ok": true, "control_plane": null, "workers": workers});
    };
    let mut requests = Map::new();
    let mut responses = Map::new();
    for (way, name) in [(Way::In, "in"), (Way::Out, "out")] {
        let r: Map<String, Value> = METHODS
            .iter()
            .map(|m| ((*m).to_string(), json!(s.sip.requests(m, way))))
            .filter(|(_, v)| v.as_u64() != Some(0))
            .collect();
        requests.insert(name.into(), Value::Object(r));
        let r: Map<String, Value> = (100..700u16)
            .map(|c| (c.to_string(), s.sip.responses(c, way)))
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| (c, json!(n)))
            .collect();
        responses.insert(name.into(), Value::Object(r));
    }
    let calls: Vec<Value> = s
        .calls
        .iter()
        .map(|(realm, trunk, c)| {
            let failed: Map<String, Value> = CLASSES
                .iter()
                .zip(c.failed)
                .map(|(k, n)| ((*k).to_string(), json!(n)))
                .collect();
            json!({"realm": realm, "trunk": trunk, "started": c.started,
                   "answered": c.answered, "failed": failed, "active": c.active})
        })
        .collect();
    let drops: Map<String, Value> = s
        .drops
        .iter()
        .map(|(k, n)| ((*k).to_string(), json!(n)))
        .collect();
    json!({
        "ok": true,
        "node": s.node,
        "uptime_s": s.uptime_s,
        "sip": {"requests": requests, "responses": responses},
        "calls": calls,
        "drops": drops,
        "registrations": s.registrations,
        "rings": s.rings.iter().map(|r| json!({"to_controlplane": r.to_control_plane,
            "to_dataplane": r.to_dataplane, "refused": r.refused})).collect::<Vec<_>>(),
        "workers": workers,
    })
}

/// The text exposition of `families`.
pub fn encode(families: &[MetricFamily]) -> Result<String, prometheus::Error> {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(families, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_by_method_and_status_each_way() {
        let mut t = SipTally::default();
        t.count(Way::In, b"INVITE sip:a@b SIP/2.0\r\n");
        t.count(Way::In, b"INVITE sip:a@b SIP/2.0\r\n");
        t.count(Way::Out, b"SIP/2.0 180 Ringing\r\n");
        t.count(Way::Out, b"SIP/2.0 999 Odd\r\n");
        t.count(Way::In, b"FOO sip:a@b SIP/2.0\r\n");
        assert_eq!(t.requests("INVITE", Way::In), 2);
        assert_eq!(t.requests("INVITE", Way::Out), 0);
        assert_eq!(t.requests("other", Way::In), 1);
        assert_eq!(t.responses(180, Way::Out), 1);
        assert_eq!(t.responses(999, Way::Out), 0);
    }

    #[test]
    fn calls_are_counted_by_realm_trunk_and_failure_class() {
        let mut t = CallTally::new(2, 1);
        t.started(1, Some(0));
        t.started(1, Some(0));
        t.started(0, None);
        t.answered(1, Some(0));
        t.ended(1, Some(0), true, 200);
        t.ended(1, Some(0), false, 486);
        t.ended(0, None, false, 0);
        let rows: Vec<_> = t.rows().filter(|r| r.2.started > 0).collect();
        assert_eq!(rows.len(), 2);
        let (_, _, c) = rows.iter().find(|r| r.1 == Some(0)).copied().unwrap();
        assert_eq!((c.started, c.answered, c.active), (2, 1, 0));
        assert_eq!(c.failed, [0, 1, 0, 0, 0]);
        let (realm, _, c) = rows.iter().find(|r| r.1.is_none()).copied().unwrap();
        assert_eq!((realm, c.failed[4]), (0, 1));
    }

    #[test]
    fn mos_falls_with_loss_and_jitter() {
        let clean = mos(0.0, 0.0);
        assert!((4.3..=4.5).contains(&clean), "{clean}");
        assert!(mos(0.01, 0.0) < clean);
        assert!(mos(0.05, 0.0) < mos(0.01, 0.0));
        assert!(mos(0.0, 0.2) < mos(0.0, 0.01));
        assert!(mos(1.0, 1.0) >= 1.0);
    }

    #[test]
    fn the_exposition_has_one_help_and_type_per_family_and_labelled_samples() {
        let mut snap = Snapshot {
            node: "n1".into(),
            ..Snapshot::default()
        };
        snap.sip.count(Way::In, b"INVITE sip:x SIP/2.0\r\n");
        snap.sip.count(Way::Out, b"SIP/2.0 200 OK\r\n");
        snap.calls.push((
            "access".into(),
            "core".into(),
            CallCounts {
                started: 3,
                answered: 2,
                failed: [0, 1, 0, 0, 0],
                active: 0,
            },
        ));
        snap.histograms.setup.observe(0.3);
        snap.rings.push(RingRow::default());
        let text = encode(&families(Some(&snap), &[])).unwrap();
        assert!(text.contains("rvoip_calls_started_total{realm=\"access\",trunk=\"core\"} 3"));
        assert!(
            text.contains(
                "rvoip_calls_failed_total{realm=\"access\",trunk=\"core\",class=\"4xx\"} 1"
            )
        );
        assert!(text.contains("rvoip_sip_requests_total{direction=\"in\",method=\"INVITE\"} 1"));
        assert!(text.contains("rvoip_sip_responses_total{direction=\"out\",status=\"200\"} 1"));
        assert!(text.contains("rvoip_call_setup_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("rvoip_call_setup_seconds_count 1"));
        assert_eq!(text.matches("# TYPE rvoip_drops_total counter").count(), 1);
    }
}
