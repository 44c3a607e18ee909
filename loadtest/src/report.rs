//! What a run measured: call counts, failures by reason, hdrhistogram
//! latencies, RTP figures, an E-model MOS; the live progress line, the text
//! summary, the JSON report and the optional HTML chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Everything a run counts.
#[derive(Debug)]
pub struct Report {
    /// Calls started (INVITE sent) or, for a UAS, INVITEs received.
    pub attempted: u64,
    /// Calls that ended as the scenario says (BYE answered 200).
    pub completed: u64,
    /// Calls that did not.
    pub failed: u64,
    /// Failed calls by reason (`timeout`, `bye-timeout`, `486`, ...).
    pub failures: BTreeMap<String, u64>,
    /// INVITE → first 180, microseconds.
    pub invite_to_180: Histogram<u64>,
    /// INVITE → 200, microseconds.
    pub invite_to_200: Histogram<u64>,
    /// RTP one-way transit, microseconds.
    pub rtp_transit: Histogram<u64>,
    /// Final RFC 3550 jitter per stream, microseconds.
    pub jitter: Histogram<u64>,
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// RTP packets received.
    pub rtp_received: u64,
    /// RTP packets lost (per stream: expected minus received).
    pub rtp_lost: u64,
    /// RTP packets received after a later one.
    pub rtp_out_of_order: u64,
    /// SRTP packets refused (authentication, replay, ...).
    pub srtp_errors: u64,
    /// Monotonic time of the first and the last call attempt, nanoseconds.
    pub attempts_window_ns: (u64, u64),
    /// Per second: (seconds, attempted, active, completed, failed, rtp received, p99 INVITE→200 ms).
    pub timeline: Vec<(f64, u64, u64, u64, u64, u64, f64)>,
}

#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // Invariant: 1 µs to 1 hour at 3 significant digits are valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds")
}

impl Default for Report {
    fn default() -> Self {
        Report {
            attempted: 0,
            completed: 0,
            failed: 0,
            failures: BTreeMap::new(),
            invite_to_180: histogram(),
            invite_to_200: histogram(),
            rtp_transit: histogram(),
            jitter: histogram(),
            rtp_sent: 0,
            rtp_received: 0,
            rtp_lost: 0,
            rtp_out_of_order: 0,
            srtp_errors: 0,
            attempts_window_ns: (0, 0),
            timeline: Vec::new(),
        }
    }
}

/// Records `us` (saturating into the histogram's range).
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, h.high()));
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "p50": ms(h, 0.50),
        "p90": ms(h, 0.90),
        "p99": ms(h, 0.99),
        "p999": ms(h, 0.999),
        "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
    })
}

/// ITU-T G.107 E-model for G.711 with packet-loss concealment: R from the
/// one-way delay (ms) and the packet loss (%), then MOS from R.
pub fn mos(delay_ms: f64, loss_pct: f64) -> f64 {
    let d = delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    // G.711: Ie = 0, Bpl = 25.1 with PLC (G.113 Appendix I).
    let ie_eff = 95.0 * loss_pct / (loss_pct + 25.1);
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)
    }
}

impl Report {
    /// Counts a failed call.
    pub fn fail(&mut self, reason: &str) {
        self.failed += 1;
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    /// Loss in percent of the packets expected.
    pub fn loss_pct(&self) -> f64 {
        let expected = self.rtp_received + self.rtp_lost;
        if expected == 0 {
            0.0
        } else {
            100.0 * self.rtp_lost as f64 / expected as f64
        }
    }

    /// Counts a call attempt at `now_ns`.
    pub fn attempt(&mut self, now_ns: u64) {
        if self.attempted == 0 {
            self.attempts_window_ns.0 = now_ns;
        }
        self.attempts_window_ns.1 = now_ns;
        self.attempted += 1;
    }

    /// Attempts per second while calls were being started.
    pub fn cps(&self, elapsed_s: f64) -> f64 {
        let (a, b) = self.attempts_window_ns;
        if self.attempted > 1 && b > a {
            (self.attempted - 1) as f64 / ((b - a) as f64 / 1e9)
        } else if elapsed_s > 0.0 {
            self.attempted as f64 / elapsed_s
        } else {
            0.0
        }
    }

    /// Failed calls in percent of the calls that ended.
    pub fn fail_pct(&self) -> f64 {
        let ended = self.completed + self.failed;
        if ended == 0 {
            0.0
        } else {
            100.0 * self.failed as f64 / ended as f64
        }
    }

    /// The MOS estimate: median transit, loss; `None` without media.
    pub fn mos(&self) -> Option<f64> {
        (self.rtp_received > 0).then(|| mos(ms(&self.rtp_transit, 0.5), self.loss_pct()))
    }

    /// The JSON report (keys are stable: extend, do not rename).
    pub fn json(&self, elapsed_s: f64) -> Value {
        json!({
            "calls": {
                "attempted": self.attempted,
                "completed": self.completed,
                "failed": self.failed,
            },
            "failures_by_reason": self.failures,
            "cps_achieved": self.cps(elapsed_s),
            "elapsed_s": elapsed_s,
            "latency_ms": {
                "invite_to_180": percentiles(&self.invite_to_180),
                "invite_to_200": percentiles(&self.invite_to_200),
                "rtp_transit": percentiles(&self.rtp_transit),
            },
            "rtp": {
                "sent": self.rtp_sent,
                "received": self.rtp_received,
                "lost": self.rtp_lost,
                "out_of_order": self.rtp_out_of_order,
                "srtp_errors": self.srtp_errors,
            },
            "jitter_ms": {
                "p50": ms(&self.jitter, 0.5),
                "p99": ms(&self.jitter, 0.99),
                "max": if self.jitter.is_empty() { 0.0 } else { self.jitter.max() as f64 / 1000.0 },
            },
            "mos": self.mos(),
        })
    }

    /// The text summary printed at the end.
    pub fn text(&self, elapsed_s: f64) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "calls: attempted {} completed {} failed {} ({:.3} %) in {elapsed_s:.1} s, {:.1} cps",
            self.attempted,
            self.completed,
            self.failed,
            self.fail_pct(),
            self.cps(elapsed_s)
        );
        for (reason, n) in &self.failures {
            let _ = writeln!(s, "  failed: {reason}: {n}");
        }
        for (name, h) in [
            ("INVITE->180", &self.invite_to_180),
            ("INVITE->200", &self.invite_to_200),
            ("RTP transit", &self.rtp_transit),
        ] {
            if !h.is_empty() {
                let _ = writeln!(
                    s,
                    "{name:<12} ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
                    ms(h, 0.5),
                    ms(h, 0.9),
                    ms(h, 0.99),
                    ms(h, 0.999),
                    h.max() as f64 / 1000.0
                );
            }
        }
        if self.rtp_sent + self.rtp_received > 0 {
            let _ = writeln!(
                s,
                "rtp: sent {} received {} lost {} ({:.3} %) out of order {}; jitter ms p50 {:.3} p99 {:.3}; MOS {}",
                self.rtp_sent,
                self.rtp_received,
                self.rtp_lost,
                self.loss_pct(),
                self.rtp_out_of_order,
                ms(&self.jitter, 0.5),
                ms(&self.jitter, 0.99),
                self.mos().map_or("-".to_owned(), |m| format!("{m:.2}"))
            );
        }
        if self.srtp_errors > 0 {
            let _ = writeln!(s, "srtp: {} packets refused", self.srtp_errors);
        }
        s
    }

    /// A self-contained HTML page charting the timeline (rates and the p99
    /// INVITE→200 latency per second), SVG only, no scripts.
    pub fn html(&self) -> String {
        let (w, h) = (900.0, 300.0);
        let t_max = self.timeline.last().map_or(1.0, |t| t.0.max(1.0));
        let series: [(&str, &str, Vec<f64>); 3] = [
            ("calls started per s", "#1f77b4", self.rates(|t| t.1)),
            ("RTP packets received per s", "#2ca02c", self.rates(|t| t.5)),
            (
                "p99 INVITE→200 ms",
                "#d62728",
                self.timeline.iter().map(|t| t.6).collect(),
            ),
        ];
        let mut out = String::from(
            "<!doctype html><meta charset=utf-8><title>rvoip-loadtest</title><body style=\"font-family:sans-serif\">\n",
        );
        for (name, color, ys) in series {
            let y_max = ys.iter().copied().fold(1.0, f64::max);
            let points: Vec<String> = self
                .timeline
                .iter()
                .zip(&ys)
                .map(|(t, y)| format!("{:.1},{:.1}", t.0 / t_max * w, h - y / y_max * h))
                .collect();
            let _ = writeln!(
                out,
                "<h3>{name} (max {y_max:.1})</h3><svg width={w} height={h} style=\"border:1px solid #ccc\">\
                 <polyline fill=none stroke=\"{color}\" stroke-width=2 points=\"{}\"/></svg>",
                points.join(" ")
            );
        }
        out
    }

    fn rates(&self, f: impl Fn(&(f64, u64, u64, u64, u64, u64, f64)) -> u64) -> Vec<f64> {
        let mut prev = 0u64;
        self.timeline
            .iter()
            .map(|t| {
                let v = f(t);
                let r = v.saturating_sub(prev) as f64;
                prev = v;
                r
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_e_model_rates_clean_g711_high_and_lossy_calls_low() {
        let clean = mos(20.0, 0.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let lossy = mos(20.0, 10.0);
        assert!(lossy < 3.5, "{lossy}");
        assert!(mos(400.0, 0.0) < mos(100.0, 0.0));
    }

    #[test]
    fn the_json_report_has_the_documented_keys() {
        let mut r = Report {
            attempted: 10,
            completed: 9,
            ..Report::default()
        };
        r.fail("timeout");
        record(&mut r.invite_to_200, 1500);
        let j = r.json(2.0);
        for path in [
            "/calls/attempted",
            "/calls/completed",
            "/calls/failed",
            "/failures_by_reason/timeout",
            "/cps_achieved",
            "/latency_ms/invite_to_180/p50",
            "/latency_ms/invite_to_200/p999",
            "/latency_ms/rtp_transit/max",
            "/rtp/sent",
            "/rtp/out_of_order",
            "/jitter_ms/p99",
            "/mos",
        ] {
            assert!(j.pointer(path).is_some(), "{path} missing in {j}");
        }
        assert_eq!(j.pointer("/cps_achieved"), Some(&json!(5.0)));
        assert_eq!(
            j.pointer("/latency_ms/invite_to_200/p50"),
            Some(&json!(1.5))
        );
    }
}
