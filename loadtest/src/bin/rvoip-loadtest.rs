//! `rvoip-loadtest`: SIP + RTP load against any SIP peer.
//!
//!     rvoip-loadtest uas --listen 127.0.0.1:5070 [--media] [--duration 60s]
//!     rvoip-loadtest uac --target 127.0.0.1:5060 --rate 500 --calls 5000 \
//!         --max-concurrent 10000 --hold 10s [--media] [--json report.json]
//!     rvoip-loadtest both --listen 127.0.0.1:5070 --rate 200 --calls 2000 --hold 5s
//!     rvoip-loadtest media --ng 127.0.0.1:2223 --rate 50 --calls 500 --hold 20s
//!
//! The UAC exits 1 when failed calls exceed `--max-fail-pct` (default 0.1).
// A binary is an I/O shell: it reads the clock for the cores it drives.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use rvoip_codecs::Codec;
use rvoip_dataplane::srtp::Suite;
use rvoip_loadtest::agent::{AgentRole, Config, Hold};
use rvoip_loadtest::run::{Engine, Options, Outcome, Sockets, run};

#[derive(Parser, Debug)]
#[command(
    name = "rvoip-loadtest",
    version,
    about = "SIP + RTP load generator with latency histograms"
)]
struct Cli {
    #[command(subcommand)]
    role: RoleCmd,
}

#[derive(Subcommand, Debug)]
enum RoleCmd {
    /// Place calls.
    Uac(UacArgs),
    /// Answer calls.
    Uas(UasArgs),
    /// A UAS on --listen and a UAC calling it (or --target), in one process.
    Both(BothArgs),
    /// Media only: drive an ng relay (rvoip, rtpengine) directly: offer,
    /// answer, RTP both ways through the relay for the hold time, delete.
    Media(MediaArgs),
    /// REGISTER storm with digest authentication (--rate, --calls are
    /// registrations).
    Register(RegisterArgs),
}

#[derive(Args, Debug)]
struct RegisterArgs {
    /// The registrar.
    #[arg(long)]
    target: SocketAddr,
    /// Local SIP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Domain to register in (Request-URI, To).
    #[arg(long, default_value = "rvoip.test")]
    domain: String,
    /// Expires of each registration, seconds.
    #[arg(long, default_value_t = 600)]
    expires: u32,
    #[command(flatten)]
    pace: Pace,
    #[command(flatten)]
    out: Output,
}

#[derive(Args, Debug)]
struct MediaArgs {
    /// The relay's ng control address.
    #[arg(long, default_value = "127.0.0.1:2223")]
    ng: SocketAddr,
    /// The codec leg B answers with (default: --codec).
    #[arg(long, value_parser = parse_codec)]
    answer_codec: Option<Codec>,
    /// Ask the relay to offer leg B the answer codec and transcode
    /// (ng `codec: {transcode: [...]}`).
    #[arg(long)]
    transcode: bool,
    /// With --transcode to opus: the bit rate asked of the relay's encoder
    /// (`opus/48000/2/<bitrate>`).
    #[arg(long)]
    opus_bitrate: Option<u32>,
    /// Once each call is up, ask the relay to play this file to leg A
    /// (`play media`): FILE or FILE@REPEAT (default 0: until the call ends).
    #[arg(long)]
    play: Option<String>,
    /// Once each call is up, ask the relay to record it (`start recording`).
    #[arg(long)]
    record: bool,
    /// Leg A is a WebRTC endpoint, as a browser offers: UDP/TLS/RTP/SAVPF
    /// with ICE (a controlling agent's checks, the relay's checks
    /// answered), DTLS-SRTP (the role the relay's `a=setup` leaves) and
    /// rtcp-mux; the relay is asked to bridge it to a plain RTP/AVP leg B
    /// (`transport-protocol: RTP/AVP`, `ICE: remove`, `rtcp-mux: [demux]`).
    #[arg(long, conflicts_with = "srtp")]
    webrtc: bool,
    /// Local address (ng and RTP sockets).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[command(flatten)]
    calls: CallArgs,
    #[command(flatten)]
    common: Common,
}

/// A caller's default batch wait, µs.
const DEFAULT_CALLER_BATCH_WAIT_US: u64 = 1000;

/// Options of the roles that carry calls (media).
#[derive(Args, Debug, Clone)]
struct Common {
    /// Send RTP (G.711, 20 ms, 172-octet packets) in both directions and measure it.
    #[arg(long)]
    media: bool,
    /// Offer SRTP (SDES) with this suite, e.g. AES_CM_128_HMAC_SHA1_80 or
    /// AEAD_AES_128_GCM (a UAS answers whatever suite is offered).
    #[arg(long, value_parser = parse_suite)]
    srtp: Option<Suite>,
    /// Speak this codec (PCMU, PCMA, G722, opus, L16, G729 where built
    /// in): streams carry a tone encoded in it (the caller 1 kHz, the
    /// callee 600 Hz) instead of stamped PCMU, and the first streams
    /// received are decoded and judged by the tone heard.
    #[arg(long, value_parser = parse_codec)]
    codec: Option<Codec>,
    /// Streams decoded and judged when streams carry tones.
    #[arg(long, default_value_t = 4)]
    audio_check: usize,
    /// The tone a caller sends, Hz (default 1000; tone mode).
    #[arg(long)]
    tone: Option<f64>,
    /// Tones a caller must hear, Hz, comma-separated (default 600: the
    /// callee's). Several: each must carry a tenth of the power (a
    /// conference mix).
    #[arg(long, value_delimiter = ',')]
    expect: Vec<f64>,
    /// Tones a caller must not hear (its own, in a conference).
    #[arg(long, value_delimiter = ',')]
    absent: Vec<f64>,
    /// Judge what a caller hears from this long after its first packet
    /// (e.g. after an IVR prompt).
    #[arg(long, default_value = "500ms", value_parser = parse_duration_ms)]
    judge_after: u64,
    /// A DTMF digit the caller sends after the answer: DIGIT@DELAY, e.g.
    /// 1@2s (RFC 4733 events; the offer carries telephone-event).
    #[arg(long, value_parser = parse_dtmf)]
    dtmf: Option<(u8, u64)>,
    /// Send the digit as its tone pair in the audio instead.
    #[arg(long)]
    dtmf_inband: bool,
    #[command(flatten)]
    out: Output,
}

fn parse_dtmf(s: &str) -> Result<(u8, u64), String> {
    let (d, at) = s.split_once('@').ok_or("DIGIT@DELAY, e.g. 1@2s")?;
    let c = d.chars().next().ok_or("a digit")?;
    let event =
        rvoip_codecs::dtmf::char_event(c).ok_or_else(|| format!("{d:?} is not a DTMF digit"))?;
    Ok((event, parse_duration_ms(at)?))
}

impl Common {
    /// Sets what these options say on `cfg`.
    fn apply(&self, cfg: &mut Config) {
        cfg.srtp = self.srtp;
        cfg.codec = self.codec.unwrap_or(Codec::Pcmu);
        cfg.answer_codec = cfg.codec;
        let listening = self.tone.is_some()
            || !self.expect.is_empty()
            || !self.absent.is_empty()
            || self.dtmf.is_some();
        cfg.tone = self.codec.is_some() || listening;
        cfg.audio_check = self.audio_check;
        if let Some(t) = self.tone {
            cfg.caller_tone = t;
        }
        if !self.expect.is_empty() {
            cfg.listen.expect = self.expect.clone();
        }
        cfg.listen.absent = self.absent.clone();
        cfg.listen.after_ms = self.judge_after;
        cfg.dtmf = self
            .dtmf
            .map(|(event, after_ms)| rvoip_loadtest::agent::Dtmf {
                event,
                after_ms,
                inband: self.dtmf_inband,
            });
    }
}

/// Reports and the socket loop, for every role.
#[derive(Args, Debug, Clone)]
struct Output {
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an HTML chart of rates and latency over time here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// No progress line each second.
    #[arg(long)]
    quiet: bool,
    /// Once woken by arriving datagrams, wait up to this many µs for more
    /// before handling them (fewer wake-ups, less CPU). Arrivals are timed by
    /// the kernel, so the figures do not move; replies leave up to this much
    /// later. Default: 1000 when placing calls (uac, register, media), 0 for a
    /// UAS, whose answers then go out at once.
    #[arg(long)]
    batch_wait_us: Option<u64>,
    /// Socket engine: auto (io_uring when the kernel has it), uring, or
    /// syscalls (recvmmsg/sendmmsg and poll).
    #[arg(long, default_value = "auto", value_parser = parse_engine)]
    engine: Engine,
    /// Send every datagram on its own. By default a turn's datagrams of one
    /// length to one address leave in one send that the kernel cuts into
    /// the same datagrams (UDP_SEGMENT), when the kernel can.
    #[arg(long)]
    no_segment: bool,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    match s {
        "auto" => Ok(Engine::Auto),
        "uring" => Ok(Engine::Uring),
        "syscalls" => Ok(Engine::Syscalls),
        _ => Err(format!("unknown engine {s:?} (auto, uring or syscalls)")),
    }
}

impl Output {
    /// The loop's options; `caller` for the roles that place calls.
    fn options(&self, caller: bool) -> Options {
        Options {
            progress: !self.quiet,
            batch_wait_us: self.batch_wait_us.unwrap_or(if caller {
                DEFAULT_CALLER_BATCH_WAIT_US
            } else {
                0
            }),
            engine: self.engine,
            segment: !self.no_segment,
        }
    }
}

/// How calls (or registrations) are placed.
#[derive(Args, Debug, Clone)]
struct CallArgs {
    #[command(flatten)]
    pace: Pace,
    /// Hold time after the answer: fixed (10s) or uniform in a range (5s..15s).
    #[arg(long, default_value = "1s", value_parser = parse_hold)]
    hold: Hold,
    /// User part of the Request-URI.
    #[arg(long, default_value = "service")]
    service: String,
    /// Conference load: call n goes to `<service><n / ROOMS_OF>`, rooms of
    /// this many callers.
    #[arg(long, default_value_t = 0)]
    rooms_of: u64,
    /// With --rooms-of: only the first this many callers of each room
    /// talk; the others send silence (0: all talk).
    #[arg(long, default_value_t = 0)]
    talkers: u64,
}

/// The pace of attempts, their number and the pass mark.
#[derive(Args, Debug, Clone)]
struct Pace {
    /// Attempts (calls, registrations) per second at full rate.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Time to reach the full rate, linearly (e.g. 10s).
    #[arg(long, default_value = "0s", value_parser = parse_duration_ms)]
    ramp: u64,
    /// Attempts to make; unlimited with --duration.
    #[arg(long)]
    calls: Option<u64>,
    /// Stop starting attempts after this long (e.g. 60s, 5m).
    #[arg(long, value_parser = parse_duration_ms)]
    duration: Option<u64>,
    /// Most attempts in progress at once.
    #[arg(long, default_value_t = 10_000)]
    max_concurrent: u64,
    /// Exit status 1 when failed attempts exceed this percentage.
    #[arg(long, default_value_t = 0.1)]
    max_fail_pct: f64,
    /// User name for digest challenges (401/407).
    #[arg(long)]
    user: Option<String>,
    /// Password for digest challenges.
    #[arg(long)]
    password: Option<String>,
}

#[derive(Args, Debug)]
struct UacArgs {
    /// The SIP peer to call (proxy, SBC or UAS).
    #[arg(long)]
    target: SocketAddr,
    /// Local SIP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[command(flatten)]
    calls: CallArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct UasArgs {
    /// Local SIP address.
    #[arg(long, default_value = "127.0.0.1:5070")]
    listen: SocketAddr,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_duration_ms)]
    duration: Option<u64>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct BothArgs {
    /// The UAS's SIP address.
    #[arg(long, default_value = "127.0.0.1:5070")]
    listen: SocketAddr,
    /// Where the UAC calls (default: the UAS itself).
    #[arg(long)]
    target: Option<SocketAddr>,
    #[command(flatten)]
    calls: CallArgs,
    #[command(flatten)]
    common: Common,
}

fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s} (e.g. 500ms, 10s, 5m)"))?;
    let ms = match unit {
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return Err(format!("unknown unit in {s} (ms, s, m, h)")),
    };
    Ok(ms as u64)
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::from_name(s.as_bytes())
        .filter(|c| c.transcodable())
        .ok_or_else(|| {
            let names: Vec<&str> = Codec::ALL
                .iter()
                .filter(|c| c.transcodable())
                .map(|c| c.name())
                .collect();
            format!("unknown codec {s} (one of {})", names.join(", "))
        })
}

fn parse_suite(s: &str) -> Result<Suite, String> {
    Suite::from_name(s.as_bytes()).ok_or_else(|| {
        let names: Vec<&str> = Suite::ALL.iter().map(|s| s.name()).collect();
        format!("unknown SRTP suite {s} (one of {})", names.join(", "))
    })
}

fn parse_hold(s: &str) -> Result<Hold, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (min_ms, max_ms) = (parse_duration_ms(a)?, parse_duration_ms(b)?);
            if min_ms > max_ms {
                return Err(format!("hold range {s} is empty"));
            }
            Ok(Hold { min_ms, max_ms })
        }
        None => {
            let ms = parse_duration_ms(s)?;
            Ok(Hold {
                min_ms: ms,
                max_ms: ms,
            })
        }
    }
}

fn run_id() -> u32 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    t ^ std::process::id().rotate_left(16)
}

fn config(
    role: AgentRole,
    socks: &Sockets,
    target: Option<SocketAddr>,
    calls: Option<&CallArgs>,
    media: bool,
    duration_ms: Option<u64>,
) -> std::io::Result<Config> {
    let none = CallArgs {
        pace: Pace {
            rate: 0.0,
            ramp: 0,
            calls: None,
            duration: None,
            max_concurrent: 0,
            max_fail_pct: 0.1,
            user: None,
            password: None,
        },
        hold: Hold {
            min_ms: 0,
            max_ms: 0,
        },
        service: "service".into(),
        rooms_of: 0,
        talkers: 0,
    };
    let call = calls.unwrap_or(&none);
    let c = &call.pace;
    let duration = duration_ms.or(c.duration);
    Ok(Config {
        role,
        target,
        service: call.service.clone(),
        rate: c.rate,
        ramp_s: c.ramp as f64 / 1000.0,
        calls: c
            .calls
            .unwrap_or(if duration.is_some() { u64::MAX } else { 100 }),
        max_concurrent: c.max_concurrent,
        duration_ns: duration.map(|ms| ms * 1_000_000),
        hold: call.hold,
        media,
        sip_local: socks.sip.local_addr()?,
        rtp_local: socks.rtp.local_addr()?,
        run_id: run_id(),
        srtp: None,
        auth: c
            .user
            .clone()
            .map(|u| (u, c.password.clone().unwrap_or_default())),
        domain: "rvoip.test".into(),
        expires: 600,
        codec: Codec::Pcmu,
        answer_codec: Codec::Pcmu,
        transcode: false,
        audio_check: 4,
        tone: false,
        opus_bitrate: None,
        listen: Default::default(),
        caller_tone: rvoip_loadtest::media::CALLER_TONE,
        dtmf: None,
        ng_service: None,
        rooms_of: call.rooms_of,
        talkers: call.talkers,
        webrtc: false,
    })
}

fn finish(name: &str, o: &Outcome, common: &Output) -> std::io::Result<()> {
    eprintln!("--- {name} ---");
    eprint!("{}", o.report.text(o.elapsed_s));
    let json = serde_json::to_string_pretty(&o.report.json(o.elapsed_s)).unwrap_or_default();
    if let Some(path) = &common.json {
        std::fs::write(path, json + "\n")?;
    }
    if let Some(path) = &common.plot {
        std::fs::write(
            path,
            o.report
                .html(&format!("rvoip-loadtest {name}"), o.elapsed_s),
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    match real_main(cli, &stop) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rvoip-loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

fn verdict(o: &Outcome, max_fail_pct: f64) -> ExitCode {
    if o.report.fail_pct() > max_fail_pct || o.report.attempted == 0 {
        eprintln!(
            "FAIL: {:.3} % of calls failed (limit {max_fail_pct} %)",
            o.report.fail_pct()
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn real_main(cli: Cli, stop: &Arc<AtomicBool>) -> std::io::Result<ExitCode> {
    match cli.role {
        RoleCmd::Uas(a) => {
            let socks = Sockets::bind(a.listen)?;
            let mut cfg = config(
                AgentRole::Uas,
                &socks,
                None,
                None,
                a.common.media,
                a.duration,
            )?;
            a.common.apply(&mut cfg);
            eprintln!(
                "rvoip-loadtest uas on {} (rtp {})",
                cfg.sip_local, cfg.rtp_local
            );
            let o = run(cfg, &socks, stop, a.common.out.options(false))?;
            finish("uas", &o, &a.common.out)?;
            Ok(ExitCode::SUCCESS)
        }
        RoleCmd::Uac(a) => {
            let socks = Sockets::bind(a.listen)?;
            let mut cfg = config(
                AgentRole::Uac,
                &socks,
                Some(a.target),
                Some(&a.calls),
                a.common.media,
                None,
            )?;
            a.common.apply(&mut cfg);
            let o = run(cfg, &socks, stop, a.common.out.options(true))?;
            finish("uac", &o, &a.common.out)?;
            Ok(verdict(&o, a.calls.pace.max_fail_pct))
        }
        RoleCmd::Register(a) => {
            let socks = Sockets::bind(a.listen)?;
            let calls = CallArgs {
                pace: a.pace.clone(),
                hold: Hold {
                    min_ms: 0,
                    max_ms: 0,
                },
                service: String::new(),
                rooms_of: 0,
                talkers: 0,
            };
            let mut cfg = config(
                AgentRole::Register,
                &socks,
                Some(a.target),
                Some(&calls),
                false,
                None,
            )?;
            cfg.domain = a.domain.clone();
            cfg.expires = a.expires;
            let o = run(cfg, &socks, stop, a.out.options(true))?;
            finish("register", &o, &a.out)?;
            Ok(verdict(&o, a.pace.max_fail_pct))
        }
        RoleCmd::Media(a) => {
            let socks = Sockets::bind(a.listen)?;
            let mut cfg = config(
                AgentRole::Ng,
                &socks,
                Some(a.ng),
                Some(&a.calls),
                true,
                None,
            )?;
            a.common.apply(&mut cfg);
            cfg.answer_codec = a.answer_codec.unwrap_or(cfg.codec);
            cfg.transcode = a.transcode;
            cfg.opus_bitrate = a.opus_bitrate;
            cfg.webrtc = a.webrtc;
            cfg.ng_service = match (&a.play, a.record) {
                (Some(p), _) => {
                    let (file, repeat) = match p.rsplit_once('@') {
                        Some((f, r)) => (f.to_owned(), r.parse().unwrap_or(0)),
                        None => (p.clone(), 0),
                    };
                    Some(rvoip_loadtest::agent::NgService::Play { file, repeat })
                }
                (None, true) => Some(rvoip_loadtest::agent::NgService::Record),
                (None, false) => None,
            };
            let o = run(cfg, &socks, stop, a.common.out.options(true))?;
            finish("media", &o, &a.common.out)?;
            Ok(verdict(&o, a.calls.pace.max_fail_pct))
        }
        RoleCmd::Both(a) => {
            let uas_socks = Sockets::bind(a.listen)?;
            let uac_socks = Sockets::bind(SocketAddr::new(a.listen.ip(), 0))?;
            let target = a.target.unwrap_or(uas_socks.sip.local_addr()?);
            let mut uac_cfg = config(
                AgentRole::Uac,
                &uac_socks,
                Some(target),
                Some(&a.calls),
                a.common.media,
                None,
            )?;
            a.common.apply(&mut uac_cfg);
            let mut uas_cfg = config(AgentRole::Uas, &uas_socks, None, None, a.common.media, None)?;
            a.common.apply(&mut uas_cfg);
            let uas_stop = Arc::new(AtomicBool::new(false));
            let uas_stop2 = Arc::clone(&uas_stop);
            let uas_opts = Options {
                progress: false,
                ..a.common.out.options(false)
            };
            let uas = std::thread::spawn(move || run(uas_cfg, &uas_socks, &uas_stop2, uas_opts));
            let o = run(uac_cfg, &uac_socks, stop, a.common.out.options(true))?;
            uas_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let uas_outcome = uas
                .join()
                .map_err(|_| std::io::Error::other("the UAS thread failed"))??;
            eprintln!("--- uas ---");
            eprint!("{}", uas_outcome.report.text(uas_outcome.elapsed_s));
            finish("uac", &o, &a.common.out)?;
            Ok(verdict(&o, a.calls.pace.max_fail_pct))
        }
    }
}
