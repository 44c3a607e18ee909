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
    /// Octets of the RTP packets received (headers included).
    pub rtp_octets_received: u64,
    /// RTP packets lost (per stream: expected minus received).
    pub rtp_lost: u64,
    /// RTP packets received after a later one.
    pub rtp_out_of_order: u64,
    /// SRTP packets refused (authentication, replay, ...).
    pub srtp_errors: u64,
    /// Tone mode: streams whose audio was decoded and judged.
    pub audio_checked: u64,
    /// Of those, streams in which the other side's tone was heard clearly
    /// (SNR ≥ 15 dB) for at least 80 % of the time.
    pub audio_clear: u64,
    /// The lowest share of time any judged stream was clear, 0–1.
    pub audio_worst: f64,
    /// Tone mode: the loudest level heard before the judged part of a
    /// stream (an IVR's prompt), dBov.
    pub audio_before_dbov: f64,
    /// ng media services (play media, start recording) accepted.
    pub ng_services: u64,
    /// WebRTC legs keyed: ICE checked and the DTLS-SRTP handshake done.
    pub webrtc_keyed: u64,
    /// From the relay's answer to the leg's SRTP keys, µs.
    pub webrtc_setup: Histogram<u64>,
    /// ng media services refused.
    pub ng_service_errors: u64,
    /// RTP packets received in calls that failed, left out of the figures
    /// above (a UAC knows which calls its streams belong to).
    pub rtp_failed_calls: u64,
    /// RTP packets received in calls still up when the run was stopped,
    /// left out of the figures above.
    pub rtp_calls_still_up: u64,
    /// Answers (2xx) that came for calls already given up, acknowledged and
    /// hung up at once.
    pub abandoned_hung_up: u64,
    /// Monotonic time of the first and the last call attempt, nanoseconds.
    pub attempts_window_ns: (u64, u64),
    /// Whether the RTP figures cover completed calls only (a UAC) or every
    /// stream received (a UAS).
    pub rtp_completed_only: bool,
    /// One entry per second of the run.
    pub timeline: Vec<Second>,
    /// INVITE → 200 of the calls answered in the current second.
    second_setup: Histogram<u64>,
    /// Transit of the packets received in the current second.
    second_transit: Histogram<u64>,
}

/// One second of a run: running totals, and percentiles of that second
/// alone.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    /// Seconds since the start.
    pub t_s: f64,
    /// Calls attempted so far.
    pub attempted: u64,
    /// Calls completed so far.
    pub completed: u64,
    /// Calls failed so far.
    pub failed: u64,
    /// Calls in progress.
    pub active: u64,
    /// RTP packets received so far.
    pub rtp_received: u64,
    /// RTP packets lost so far (streams still live included).
    pub rtp_lost: u64,
    /// INVITE → 200 of the calls answered in this second, p50 and p99, ms
    /// (NaN in a second that answered none: no point on the chart).
    pub setup_p50_ms: f64,
    /// See `setup_p50_ms`.
    pub setup_p99_ms: f64,
    /// Transit of the packets received in this second, p99, ms (NaN in a
    /// second that received none).
    pub transit_p99_ms: f64,
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
            rtp_octets_received: 0,
            rtp_lost: 0,
            rtp_out_of_order: 0,
            srtp_errors: 0,
            audio_checked: 0,
            audio_clear: 0,
            audio_worst: 1.0,
            audio_before_dbov: f64::NEG_INFINITY,
            ng_services: 0,
            webrtc_keyed: 0,
            webrtc_setup: histogram(),
            ng_service_errors: 0,
            rtp_failed_calls: 0,
            rtp_calls_still_up: 0,
            abandoned_hung_up: 0,
            attempts_window_ns: (0, 0),
            rtp_completed_only: false,
            timeline: Vec::new(),
            second_setup: histogram(),
            second_transit: histogram(),
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

/// A percentile in ms, NaN when nothing was recorded.
fn ms_or_none(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() { f64::NAN } else { ms(h, q) }
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

    /// Records a call's INVITE → 200, µs.
    pub fn record_setup(&mut self, us: u64) {
        record(&mut self.invite_to_200, us);
        record(&mut self.second_setup, us);
    }

    /// Records a packet's transit, µs.
    pub fn record_transit(&mut self, us: u64) {
        record(&mut self.rtp_transit, us);
        record(&mut self.second_transit, us);
    }

    /// Closes the second ending at `t_s` with `active` calls in progress and
    /// `live_lost` packets lost in streams not folded yet; starts the next.
    pub fn close_second(&mut self, t_s: f64, active: u64, live_lost: u64) -> Second {
        let second = Second {
            t_s,
            attempted: self.attempted,
            completed: self.completed,
            failed: self.failed,
            active,
            rtp_received: self.rtp_received,
            rtp_lost: self.rtp_lost + live_lost,
            setup_p50_ms: ms_or_none(&self.second_setup, 0.5),
            setup_p99_ms: ms_or_none(&self.second_setup, 0.99),
            transit_p99_ms: ms_or_none(&self.second_transit, 0.99),
        };
        self.second_setup.reset();
        self.second_transit.reset();
        self.timeline.push(second);
        second
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

    /// Records a judged stream: the share of its time the tone was clear.
    pub fn record_audio(&mut self, clear: f64, before_dbov: f64) {
        self.audio_before_dbov = self.audio_before_dbov.max(before_dbov);
        self.audio_checked += 1;
        self.audio_clear += u64::from(clear >= 0.8);
        self.audio_worst = self.audio_worst.min(clear);
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
                "late_answers_hung_up": self.abandoned_hung_up,
            },
            "failures_by_reason": self.failures,
            "ng_services": { "accepted": self.ng_services, "refused": self.ng_service_errors },
            "webrtc": {
                "keyed": self.webrtc_keyed,
                "answer_to_keys_ms": percentiles(&self.webrtc_setup),
            },
            "cps_achieved": self.cps(elapsed_s),
            "elapsed_s": elapsed_s,
            "latency_ms": {
                "invite_to_180": percentiles(&self.invite_to_180),
                "invite_to_200": percentiles(&self.invite_to_200),
                "rtp_transit": percentiles(&self.rtp_transit),
            },
            "rtp": {
                "scope": self.rtp_scope(),
                "sent": self.rtp_sent,
                "received": self.rtp_received,
                "octets_received": self.rtp_octets_received,
                "lost": self.rtp_lost,
                "expected": self.rtp_received + self.rtp_lost,
                "received_in_failed_calls": self.rtp_failed_calls,
                "received_in_calls_still_up": self.rtp_calls_still_up,
                "out_of_order": self.rtp_out_of_order,
                "srtp_errors": self.srtp_errors,
            },
            "jitter_ms": {
                "p50": ms(&self.jitter, 0.5),
                "p99": ms(&self.jitter, 0.99),
                "max": if self.jitter.is_empty() { 0.0 } else { self.jitter.max() as f64 / 1000.0 },
            },
            "mos": self.mos(),
            "audio": {
                "streams_judged": self.audio_checked,
                "streams_clear": self.audio_clear,
                "worst_clear_share": if self.audio_checked > 0 { self.audio_worst } else { 0.0 },
                "before_judged_dbov": if self.audio_before_dbov.is_finite() { self.audio_before_dbov } else { -120.0 },
            },
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
        if self.rtp_sent + self.rtp_received + self.rtp_failed_calls > 0 {
            let _ = writeln!(
                s,
                "rtp ({}): sent {} received {} + lost {} = expected {} ({:.3} % lost), out of order {}; jitter ms p50 {:.3} p99 {:.3}; MOS {}",
                self.rtp_scope(),
                self.rtp_sent,
                self.rtp_received,
                self.rtp_lost,
                self.rtp_received + self.rtp_lost,
                self.loss_pct(),
                self.rtp_out_of_order,
                ms(&self.jitter, 0.5),
                ms(&self.jitter, 0.99),
                self.mos().map_or("-".to_owned(), |m| format!("{m:.2}"))
            );
            if self.rtp_failed_calls + self.rtp_calls_still_up > 0 {
                let _ = writeln!(
                    s,
                    "rtp not in the figures above: {} received in failed calls, {} in calls still up when the run stopped",
                    self.rtp_failed_calls, self.rtp_calls_still_up
                );
            }
        }
        if self.srtp_errors > 0 {
            let _ = writeln!(s, "srtp: {} packets refused", self.srtp_errors);
        }
        if self.webrtc_keyed > 0 {
            let _ = writeln!(
                s,
                "webrtc: {} legs keyed by ICE and DTLS-SRTP, answer to keys p50 {:.2} ms p99 {:.2} ms",
                self.webrtc_keyed,
                ms(&self.webrtc_setup, 0.5),
                ms(&self.webrtc_setup, 0.99)
            );
        }
        if self.audio_checked > 0 {
            let _ = writeln!(
                s,
                "audio: {} streams judged, {} heard the other side's tone clearly (worst: clear {:.0} % of the time)",
                self.audio_checked,
                self.audio_clear,
                self.audio_worst * 100.0
            );
        }
        s
    }

    /// What the RTP figures cover.
    fn rtp_scope(&self) -> &'static str {
        if self.rtp_completed_only {
            "completed calls"
        } else {
            "every stream received"
        }
    }

    /// A self-contained HTML page (inline SVG, no scripts): a summary table,
    /// then per second the calls attempted, completed and failed, the calls
    /// in progress, setup time percentiles, RTP packets and loss, and RTP
    /// transit, each on time and value axes with units.
    pub fn html(&self, title: &str, elapsed_s: f64) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let _ = write!(
            out,
            "<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>\n\
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th{{text-align:left;background:#f4f4f4}}\
h2{{margin-top:28px;font-size:17px}}</style>\n<h1 style=\"font-size:21px\">{title}</h1>\n"
        );
        self.summary_table(&mut out, elapsed_s);
        let xs: Vec<f64> = self.timeline.iter().map(|t| t.t_s).collect();
        let per_second = |f: fn(&Second) -> u64| -> Vec<f64> {
            let mut prev: Option<&Second> = None;
            self.timeline
                .iter()
                .map(|t| {
                    let (v0, t0) = prev.map_or((0, 0.0), |p| (f(p), p.t_s));
                    prev = Some(t);
                    f(t).saturating_sub(v0) as f64 / (t.t_s - t0).max(1e-3)
                })
                .collect()
        };
        chart(
            &mut out,
            "Calls per second",
            "calls/s",
            &xs,
            &[
                ("attempted", "#1f77b4", per_second(|t| t.attempted)),
                ("completed", "#2ca02c", per_second(|t| t.completed)),
                ("failed", "#d62728", per_second(|t| t.failed)),
            ],
        );
        chart(
            &mut out,
            "Calls in progress",
            "calls",
            &xs,
            &[(
                "in progress",
                "#9467bd",
                self.timeline.iter().map(|t| t.active as f64).collect(),
            )],
        );
        chart(
            &mut out,
            "Call setup time (INVITE to 200) of the calls answered each second",
            "ms",
            &xs,
            &[
                (
                    "p50",
                    "#1f77b4",
                    self.timeline.iter().map(|t| t.setup_p50_ms).collect(),
                ),
                (
                    "p99",
                    "#d62728",
                    self.timeline.iter().map(|t| t.setup_p99_ms).collect(),
                ),
            ],
        );
        if self.rtp_received + self.rtp_lost > 0 {
            let received = per_second(|t| t.rtp_received);
            let lost = per_second(|t| t.rtp_lost);
            let loss_pct: Vec<f64> = received
                .iter()
                .zip(&lost)
                .map(|(r, l)| {
                    if r + l > 0.0 {
                        100.0 * l / (r + l)
                    } else {
                        0.0
                    }
                })
                .collect();
            chart(
                &mut out,
                "RTP packets received per second",
                "packets/s",
                &xs,
                &[("received", "#2ca02c", received)],
            );
            chart(
                &mut out,
                "RTP loss per second",
                "% lost",
                &xs,
                &[("lost", "#d62728", loss_pct)],
            );
            chart(
                &mut out,
                "RTP transit of the packets received each second",
                "ms",
                &xs,
                &[(
                    "p99",
                    "#ff7f0e",
                    self.timeline.iter().map(|t| t.transit_p99_ms).collect(),
                )],
            );
        }
        out.push_str("</html>\n");
        out
    }

    fn summary_table(&self, out: &mut String, elapsed_s: f64) {
        let mut rows: Vec<(String, String)> = vec![
            ("calls attempted".into(), self.attempted.to_string()),
            ("calls completed".into(), self.completed.to_string()),
            (
                "calls failed".into(),
                format!("{} ({:.3} %)", self.failed, self.fail_pct()),
            ),
        ];
        for (reason, n) in &self.failures {
            rows.push((
                format!("&nbsp;&nbsp;failed: {}", html_escape(reason)),
                n.to_string(),
            ));
        }
        rows.push((
            "calls per second".into(),
            format!("{:.1}", self.cps(elapsed_s)),
        ));
        rows.push(("duration".into(), format!("{elapsed_s:.1} s")));
        for (name, h) in [
            ("INVITE to 180", &self.invite_to_180),
            ("INVITE to 200", &self.invite_to_200),
            ("RTP transit", &self.rtp_transit),
        ] {
            if !h.is_empty() {
                rows.push((
                    format!("{name}: p50 / p99 / max"),
                    format!(
                        "{:.1} / {:.1} / {:.1} ms",
                        ms(h, 0.5),
                        ms(h, 0.99),
                        h.max() as f64 / 1000.0
                    ),
                ));
            }
        }
        if self.rtp_sent + self.rtp_received > 0 {
            rows.push((
                format!("RTP ({}): received + lost = expected", self.rtp_scope()),
                format!(
                    "{} + {} = {} ({:.3} % lost)",
                    self.rtp_received,
                    self.rtp_lost,
                    self.rtp_received + self.rtp_lost,
                    self.loss_pct()
                ),
            ));
            rows.push(("RTP sent".into(), self.rtp_sent.to_string()));
            rows.push((
                "jitter p50 / p99".into(),
                format!(
                    "{:.2} / {:.2} ms",
                    ms(&self.jitter, 0.5),
                    ms(&self.jitter, 0.99)
                ),
            ));
            rows.push((
                "MOS (E-model, G.711)".into(),
                self.mos().map_or("-".to_owned(), |m| format!("{m:.2}")),
            ));
        }
        out.push_str("<table id=\"summary\">\n");
        for (k, v) in rows {
            let _ = writeln!(out, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        out.push_str("</table>\n");
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step for about `n` ticks over `0..=max`: 1, 2 or 5 times a power
/// of ten.
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Formats a tick value without needless decimals.
fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// One line chart: `series` of (name, colour, value per x) over `xs`
/// (seconds), with a time axis, a value axis in `unit`, grid lines and a
/// legend.
fn chart(out: &mut String, title: &str, unit: &str, xs: &[f64], series: &[(&str, &str, Vec<f64>)]) {
    let (w, h) = (900.0, 280.0);
    let (left, right, top, bottom) = (70.0, 20.0, 16.0, 44.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let x_max = xs.last().copied().unwrap_or(1.0).max(1.0);
    let y_top = series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_step = tick_step(if y_top > 0.0 { y_top } else { 1.0 }, 5.0);
    let y_max = (y_top / y_step).ceil().max(1.0) * y_step;
    let x_step = tick_step(x_max, 10.0);
    let px = |x: f64| left + x / x_max * pw;
    let py = |y: f64| top + ph - y / y_max * ph;
    let _ = write!(out, "<h2>{title}</h2>\n<div class=\"legend\">");
    for (name, color, _) in series {
        let _ = write!(
            out,
            "<span style=\"margin-right:18px\"><span style=\"display:inline-block;width:12px;height:12px;background:{color};margin-right:5px\"></span>{name}</span>"
        );
    }
    let _ = write!(
        out,
        "</div>\n<svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-size=\"12\" font-family=\"sans-serif\">\n"
    );
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + pw,
            py(y),
            py(y),
            left - 6.0,
            py(y) + 4.0,
            tick_label(y, y_step)
        );
        y += y_step;
    }
    let mut x = 0.0;
    while x <= x_max + x_step / 2.0 {
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#f0f0f0\"/><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x),
            px(x),
            top + ph,
            px(x),
            top + ph + 16.0,
            tick_label(x, x_step)
        );
        x += x_step;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{}\" stroke=\"#444\"/><line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#444\"/>",
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time (s)</text><text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">{unit}</text>",
        left + pw / 2.0,
        h - 6.0,
        top + ph / 2.0
    );
    for (name, color, ys) in series {
        let points: Vec<String> = xs
            .iter()
            .zip(ys)
            .filter(|(_, y)| y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline class=\"series\" data-name=\"{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
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
