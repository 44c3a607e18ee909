//! The rtpengine-compatible "ng" control protocol, an adapter onto the media
//! sessions: each UDP datagram is a cookie, a space and a bencoded
//! dictionary; the reply repeats the cookie. A request becomes a
//! [`MediaOrder`], the sessions carry it out, and the [`MediaReply`] or
//! [`OrderError`] is written back as rtpengine writes it, so Kamailio's and
//! OpenSIPS' `rtpengine` modules drive rvoip's relay unchanged.
//!
//! [`NgServer::handle`] is sans-IO: a request datagram and the wall-clock time
//! in, a reply datagram out. Commands: `ping`, `offer`, `answer`, `delete`,
//! `query`, `list`. Replies to a cookie are cached, so a retransmitted
//! request gets the same answer and is not executed twice.

pub mod bencode;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use bencode::Value;

use crate::entropy::Entropy;
use crate::media::orders::{
    AddressFamily, CallId, CallStats, CodecOptions, CodecSpec, DtlsFlag, IceFlag, MediaOrder,
    MediaReply, MediaService, OrderError, Party, Profile, Recording, SdpOptions, Tag,
};
use crate::media::plan::MediaControl;
use crate::media::sessions::Sessions;

/// A dictionary key of a reply: nearly always a literal.
pub type Key = std::borrow::Cow<'static, str>;

/// An owned bencode value, for replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Integer.
    Int(i64),
    /// Byte string.
    Str(Vec<u8>),
    /// List.
    List(Vec<Out>),
    /// Dictionary (written with sorted keys).
    Dict(Vec<(Key, Out)>),
}

impl Out {
    fn str(s: impl Into<Vec<u8>>) -> Out {
        Out::Str(s.into())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut digits = [0u8; 20];
        match self {
            Out::Int(i) => {
                out.push(b'i');
                if *i < 0 {
                    out.push(b'-');
                }
                out.extend_from_slice(crate::text::decimal(i.unsigned_abs(), &mut digits));
                out.push(b'e');
            }
            Out::Str(b) => bencode::put_bytes(out, b),
            Out::List(items) => {
                out.push(b'l');
                items.iter().for_each(|i| i.encode(out));
                out.push(b'e');
            }
            Out::Dict(entries) => {
                let mut sorted: Vec<&(Key, Out)> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'd');
                for (k, v) in sorted {
                    bencode::put_bytes(out, k.as_bytes());
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// A failed command: the `error-reason` of the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgError(pub String);

impl NgError {
    fn of(e: OrderError) -> NgError {
        NgError(e.to_string())
    }
}

impl<T: Into<String>> From<T> for NgError {
    fn from(s: T) -> Self {
        NgError(s.into())
    }
}

/// Replies kept for retransmitted requests.
const REPLY_CACHE: usize = 4096;

/// What a cached reply answers: the client (its address) and its cookie. A
/// retransmission comes from the client that sent the request; another
/// client reusing the cookie (a restarted proxy counting from 1 again) is
/// a new request.
type CacheKey = (SocketAddr, Vec<u8>);

/// The ng protocol server over a relay's media sessions.
#[derive(Debug)]
pub struct NgServer<M> {
    sessions: Sessions<M>,
    cache: HashMap<CacheKey, Vec<u8>>,
    cache_order: VecDeque<CacheKey>,
    counters: NgCounters,
}

/// Commands seen and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NgCounters {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests answered from the cache (retransmissions).
    pub retransmissions: u64,
    /// Datagrams without a cookie (dropped).
    pub dropped: u64,
    /// Calls deleted because their media timed out.
    pub media_timeouts: u64,
}

fn strings<'a>(v: Option<&'a Value<'a>>) -> Vec<&'a [u8]> {
    match v {
        Some(Value::List(items)) => items.iter().filter_map(Value::as_bytes).collect(),
        Some(Value::Bytes(b)) => vec![*b],
        _ => Vec::new(),
    }
}

/// How much a `delete` or `query` reply reports: `flags: [totals-only]`
/// (a rvoip extension; other relays ignore unknown flags) leaves out the
/// per-tag detail, for clients that only keep the call's totals.
fn detail(req: &Value<'_>) -> stats::Detail {
    if strings(req.get("flags"))
        .iter()
        .any(|f| f.eq_ignore_ascii_case(b"totals-only"))
    {
        stats::Detail::TotalsOnly
    } else {
        stats::Detail::Full
    }
}

fn options(req: &Value<'_>) -> Result<SdpOptions, NgError> {
    let mut f = SdpOptions::default();
    for r in strings(req.get("replace")) {
        // Connection lines always get the relay's address (the media goes
        // there), so only the origin is optional.
        if r == b"origin" {
            f.replace_origin = true;
        }
    }
    for m in strings(req.get("rtcp-mux")) {
        match m {
            b"offer" | b"require" => f.mux_offer = true,
            b"demux" => f.mux_demux = true,
            b"reject" => f.mux_reject = true,
            _ => {}
        }
    }
    let protocol = |tp: &[u8]| {
        Profile::from_name(tp).ok_or_else(|| {
            NgError(format!(
                "Unsupported transport-protocol: {} (RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF, \
UDP/TLS/RTP/SAVP, UDP/TLS/RTP/SAVPF)",
                String::from_utf8_lossy(tp)
            ))
        })
    };
    if let Some(tp) = req.get("transport-protocol").and_then(Value::as_bytes) {
        f.transport_protocol = Some(protocol(tp)?);
    }
    let ice = |v: &[u8]| {
        IceFlag::parse(v).ok_or_else(|| {
            NgError(format!(
                "Invalid ICE: {} (remove, force, force-relay, default)",
                String::from_utf8_lossy(v)
            ))
        })
    };
    let dtls = |v: &[u8]| {
        DtlsFlag::parse(v).ok_or_else(|| {
            NgError(format!(
                "Invalid DTLS: {} (off, passive, active)",
                String::from_utf8_lossy(v)
            ))
        })
    };
    if let Some(v) = req.get("ICE").and_then(Value::as_bytes) {
        f.ice = Some(ice(v)?);
    }
    if let Some(v) = req.get("DTLS").and_then(Value::as_bytes) {
        f.dtls = Some(dtls(v)?);
    }
    // Kamailio's flag strings: `ICE=remove`, `DTLS=passive`,
    // `transport-protocol=RTP/AVP`, `rtcp-mux-demux`, `generate-mid`.
    for flag in strings(req.get("flags")) {
        let (key, value) = match flag.iter().position(|b| *b == b'=') {
            Some(i) => (&flag[..i], Some(&flag[i + 1..])),
            None => (flag, None),
        };
        match (key.to_ascii_lowercase().as_slice(), value) {
            (b"ice", Some(v)) => f.ice = Some(ice(v)?),
            (b"dtls", Some(v)) => f.dtls = Some(dtls(v)?),
            (b"transport-protocol", Some(v)) => f.transport_protocol = Some(protocol(v)?),
            (b"rtcp-mux-offer" | b"rtcp-mux-require", None) => f.mux_offer = true,
            (b"rtcp-mux-demux", None) => f.mux_demux = true,
            (b"rtcp-mux-reject", None) => f.mux_reject = true,
            (b"generate-mid", None) => f.generate_mid = true,
            _ => {}
        }
    }
    // `flags: [SDES-off, SDES-only-<suite>, ...]` or `SDES: [off, only-<suite>, ...]`.
    for flag in strings(req.get("flags")) {
        if flag.len() > 5 && flag[..5].eq_ignore_ascii_case(b"SDES-") {
            f.sdes.read(&flag[5..]).map_err(NgError::of)?;
        }
    }
    for flag in strings(req.get("SDES")) {
        f.sdes.read(flag).map_err(NgError::of)?;
    }
    f.codecs = codec_options(req)?;
    f.address_family = address_family(req)?;
    f.label = req
        .get("label")
        .and_then(Value::as_bytes)
        .map(<[u8]>::to_vec);
    Ok(f)
}

/// The family of the relay's address given to the other side, as
/// rtpengine takes it: `address family: IP4|IP6` (Kamailio's
/// `address-family=IP6`), or `direction: [FROM, TO]` naming the relay's
/// interfaces — rvoip's are `ipv4` and `ipv6` (also `IP4`/`IP6`), the
/// second the one towards the other side.
fn address_family(req: &Value<'_>) -> Result<Option<AddressFamily>, NgError> {
    let named = req
        .get("address family")
        .or_else(|| req.get("address-family"))
        .and_then(Value::as_bytes);
    if let Some(t) = named {
        return AddressFamily::parse(t).map(Some).ok_or_else(|| {
            NgError(format!(
                "Invalid address family: {} (IP4 or IP6)",
                String::from_utf8_lossy(t)
            ))
        });
    }
    let direction = strings(req.get("direction"));
    match direction.get(1) {
        Some(to) => AddressFamily::parse(to).map(Some).ok_or_else(|| {
            NgError(format!(
                "Unknown interface in direction: {} (rvoip's are ipv4 and ipv6)",
                String::from_utf8_lossy(to)
            ))
        }),
        None => Ok(None),
    }
}

/// The `codec` dictionary (`transcode`, `strip`, `mask`, `offer`,
/// `accept`, `consume`, each a list of `NAME[/clock[/channels[/bitrate]]]`)
/// and the same as flags, as Kamailio's module sends them
/// (`codec-transcode-opus`, `codec-strip-PCMA`, `codec-mask-all`,
/// `transcode-opus`, `always-transcode`).
fn codec_options(req: &Value<'_>) -> Result<CodecOptions, NgError> {
    let mut c = CodecOptions::default();
    let spec = |text: &[u8]| {
        CodecSpec::parse(text)
            .ok_or_else(|| NgError(format!("Invalid codec: {}", String::from_utf8_lossy(text))))
    };
    if let Some(dict) = req.get("codec") {
        for (key, list) in [
            ("transcode", &mut c.transcode),
            ("strip", &mut c.strip),
            ("mask", &mut c.mask),
            ("offer", &mut c.offer),
            ("accept", &mut c.accept),
            ("consume", &mut c.consume),
        ] {
            for s in strings(dict.get(key)) {
                list.push(spec(s)?);
            }
        }
    }
    for flag in strings(req.get("flags")) {
        let lower = flag.to_ascii_lowercase();
        if lower == b"always-transcode" {
            c.always_transcode = true;
            continue;
        }
        let verbs: [&[u8]; 7] = [
            b"codec-transcode-",
            b"codec-strip-",
            b"codec-mask-",
            b"codec-offer-",
            b"codec-accept-",
            b"codec-consume-",
            b"transcode-",
        ];
        if let Some(k) = verbs.iter().position(|p| lower.starts_with(p)) {
            let s = spec(&flag[verbs[k].len()..])?;
            match k {
                0 | 6 => c.transcode.push(s),
                1 => c.strip.push(s),
                2 => c.mask.push(s),
                3 => c.offer.push(s),
                4 => c.accept.push(s),
                _ => c.consume.push(s),
            }
        }
    }
    Ok(c)
}

impl<M: MediaControl> NgServer<M> {
    /// A server writing `advertised` into SDP as the relay's address, with
    /// the SRTP keys it makes drawn from `entropy`.
    pub fn new(media: M, advertised: IpAddr, entropy: Box<dyn Entropy>) -> Self {
        NgServer {
            sessions: Sessions::new(media, advertised, entropy),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            counters: NgCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> NgCounters {
        self.counters
    }

    /// The relay's IPv6 address, for bridging address families
    /// (`[media] address_v6`).
    pub fn set_advertised_v6(&mut self, address: Option<IpAddr>) {
        self.sessions.set_advertised_v6(address);
    }

    /// How transcoded calls' Opus is encoded (`[media.opus]`).
    pub fn set_opus(&mut self, opus: rvoip_codecs::opus::OpusSettings) {
        self.sessions.set_opus(opus);
    }

    /// Where relative prompt paths (`play media`'s `file`) are read from.
    pub fn set_prompt_dir(&mut self, dir: std::path::PathBuf) {
        self.sessions.set_prompt_dir(dir);
    }

    /// The fingerprint of the DTLS certificate the media workers present
    /// (WebRTC legs); none: WebRTC offers are refused.
    pub fn set_dtls_fingerprint(&mut self, fingerprint: Option<crate::media::dtls::Fingerprint>) {
        self.sessions.set_dtls_fingerprint(fingerprint);
    }

    /// Conference rooms are recorded (`[mediaserver] record_rooms`).
    pub fn set_record_rooms(&mut self, on: bool) {
        self.sessions.set_record_rooms(on);
    }

    /// The Opus complexity of the media server's own streams
    /// (`[mediaserver] opus_complexity`).
    pub fn set_media_server_opus_complexity(&mut self, complexity: u8) {
        self.sessions.set_media_server_opus_complexity(complexity);
    }

    /// Where recordings are written (`[recording] dir`); `None` refuses
    /// `start recording`.
    pub fn set_recording_dir(&mut self, dir: Option<std::path::PathBuf>) {
        self.sessions.set_recording_dir(dir);
    }

    /// The media plane.
    pub fn media(&self) -> &M {
        self.sessions.media()
    }

    /// Calls held.
    pub fn call_count(&self) -> usize {
        self.sessions.call_count()
    }

    /// Deletes the calls whose media timed out, as rtpengine does with its
    /// `timeout`. Call about once a second; returns the Call-IDs deleted.
    pub fn expire(&mut self) -> Vec<CallId> {
        let ids = self.sessions.expire();
        self.counters.media_timeouts += ids.len() as u64;
        ids
    }

    /// Carries out a typed order (the shared-memory order channel's path:
    /// no bencode, no cache).
    pub fn execute(&mut self, order: MediaOrder, now: u64) -> Result<MediaReply, OrderError> {
        self.counters.requests += 1;
        let r = self.sessions.execute(order, now);
        if r.is_err() {
            self.counters.errors += 1;
        }
        r
    }

    /// Handles one request datagram from `from` at wall-clock time `now`
    /// (Unix seconds). Returns the reply, or `None` for a datagram without a
    /// cookie (dropped, as rtpengine does). A request whose cookie this
    /// client sent before is answered again from the cache.
    pub fn handle(&mut self, datagram: &[u8], from: SocketAddr, now: u64) -> Option<Vec<u8>> {
        let Some(sp) = datagram.iter().position(|b| *b == b' ') else {
            self.counters.dropped += 1;
            return None;
        };
        let (cookie, body) = (&datagram[..sp], &datagram[sp + 1..]);
        if cookie.is_empty() {
            self.counters.dropped += 1;
            return None;
        }
        let key = (from, cookie.to_vec());
        if let Some(cached) = self.cache.get(&key) {
            self.counters.retransmissions += 1;
            return Some(cached.clone());
        }
        self.counters.requests += 1;
        let result = match bencode::decode(body) {
            Err(_) if body.first() == Some(&b'd') => {
                Err(NgError::from("Could not decode bencode dictionary"))
            }
            Err(_) => Err(NgError::from("Invalid NG data format")),
            Ok((req @ Value::Dict(_), _)) => self.command(&req, now),
            Ok(_) => Err(NgError::from("Invalid NG data format")),
        };
        let reply = match result {
            Ok(mut entries) => {
                entries.push((
                    "result".into(),
                    Out::str(if entries.iter().any(|(k, _)| k == "pong") {
                        "pong"
                    } else {
                        "ok"
                    }),
                ));
                entries.retain(|(k, _)| k != "pong");
                Out::Dict(entries)
            }
            Err(e) => {
                self.counters.errors += 1;
                Out::Dict(vec![
                    ("result".into(), Out::str("error")),
                    ("error-reason".into(), Out::str(e.0)),
                ])
            }
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(cookie);
        out.push(b' ');
        reply.encode(&mut out);
        if self.cache_order.len() == REPLY_CACHE
            && let Some(old) = self.cache_order.pop_front()
        {
            self.cache.remove(&old);
        }
        self.cache_order.push_back(key.clone());
        self.cache.insert(key, out.clone());
        Some(out)
    }

    fn command(&mut self, req: &Value<'_>, now: u64) -> Result<Vec<(Key, Out)>, NgError> {
        let command = req
            .get("command")
            .ok_or_else(|| NgError::from("Dictionary contains no key \"command\""))?;
        let order = match command.as_bytes() {
            Some(b"ping") => MediaOrder::Ping,
            Some(b"offer") => MediaOrder::Offer {
                call_id: CallId::from(required(req, "call-id")?),
                from_tag: Tag::from(required(req, "from-tag")?),
                sdp: sdp_of(req)?.to_vec(),
                options: options(req)?,
            },
            Some(b"answer") => {
                let call_id = CallId::from(required(req, "call-id")?);
                let to_tag = Tag::from(required(req, "to-tag")?);
                // rtpengine looks the call up before it reads the SDP.
                if !self.sessions.holds(call_id.as_bytes()) {
                    return Err(NgError::of(OrderError::UnknownCall));
                }
                MediaOrder::Answer {
                    call_id,
                    to_tag,
                    sdp: sdp_of(req)?.to_vec(),
                    options: options(req)?,
                }
            }
            Some(b"delete") => MediaOrder::Delete {
                call_id: CallId::from(required(req, "call-id")?),
            },
            Some(b"query") => MediaOrder::Query {
                call_id: CallId::from(required(req, "call-id")?),
            },
            Some(b"list") => MediaOrder::List,
            Some(name) => match service(name, req)? {
                Some(service) => MediaOrder::Service {
                    call_id: CallId::from(required(req, "call-id")?),
                    party: party(req),
                    service,
                },
                None => return Err("Unrecognized command".into()),
            },
            None => return Err("Unrecognized command".into()),
        };
        let reply = self.sessions.execute(order, now).map_err(NgError::of)?;
        Ok(match reply {
            MediaReply::Pong => vec![("pong".into(), Out::Int(1))],
            MediaReply::Sdp(sdp) => vec![("sdp".into(), Out::Str(sdp))],
            MediaReply::Stats(s) => {
                stats::report(&call_report(&s), s.snapshot.as_ref(), now, detail(req))
            }
            MediaReply::NotFound => vec![(
                "warning".into(),
                Out::str("Call-ID not found or tags didn't match"),
            )],
            MediaReply::Calls(ids) => vec![(
                "calls".into(),
                Out::List(ids.into_iter().map(|id| Out::Str(id.0)).collect()),
            )],
            // rtpengine answers `play media` with the prompt's length.
            MediaReply::Done { duration_ms } => duration_ms
                .map(|d| ("duration".into(), Out::Int(d as i64)))
                .into_iter()
                .collect(),
            MediaReply::Events(_) => Vec::new(),
        })
    }
}

/// The media service an ng command names (rtpengine 10.5's commands for
/// prompts, DTMF, blocking and recording), `None` for another command.
fn service(name: &[u8], req: &Value<'_>) -> Result<Option<MediaService>, NgError> {
    let block = |media, silence, on| MediaService::Block { media, silence, on };
    Ok(Some(match name {
        b"play media" => MediaService::Play {
            file: std::path::PathBuf::from(
                req.get("file")
                    .and_then(Value::as_str)
                    .ok_or_else(|| NgError::from("No media file specified"))?,
            ),
            repeat: req
                .get("repeat-times")
                .and_then(Value::as_int)
                .map_or(1, |n| u32::try_from(n).unwrap_or(0)),
        },
        b"stop media" => MediaService::StopPlay,
        b"play DTMF" => MediaService::Dtmf {
            code: req
                .get("code")
                .and_then(dtmf_code)
                .ok_or_else(|| NgError::from("Invalid DTMF code"))?,
            duration_ms: req
                .get("duration")
                .and_then(Value::as_int)
                .map_or(100, |d| d.clamp(10, 10_000) as u32),
            volume: req
                .get("volume")
                .and_then(Value::as_int)
                .map_or(8, |v| v.unsigned_abs().min(63) as u8),
        },
        b"block DTMF" => block(false, false, true),
        b"unblock DTMF" => block(false, false, false),
        b"block media" => block(true, false, true),
        b"unblock media" => block(true, false, false),
        b"silence media" => block(true, true, true),
        b"unsilence media" => block(true, true, false),
        b"start recording" => MediaService::Record(Recording::Start),
        b"pause recording" => MediaService::Record(Recording::Pause),
        b"stop recording" => MediaService::Record(Recording::Stop),
        _ => return Ok(None),
    }))
}

/// A DTMF event code from a digit (`0`-`9`, `*`, `#`, `A`-`D`) or its
/// number (0-15).
fn dtmf_code(v: &Value<'_>) -> Option<u8> {
    if let Value::Int(n) = v {
        return u8::try_from(*n).ok().filter(|n| *n <= 15);
    }
    match v.as_bytes()? {
        [d @ b'0'..=b'9'] => Some(d - b'0'),
        [b'*'] => Some(10),
        [b'#'] => Some(11),
        [l @ (b'A'..=b'D' | b'a'..=b'd')] => Some(l.to_ascii_uppercase() - b'A' + 12),
        other => std::str::from_utf8(other)
            .ok()?
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 15),
    }
}

/// The party a media service is for: `from-tag`, else `to-tag`, else all
/// (rtpengine's selection, `all` included).
fn party(req: &Value<'_>) -> Party {
    let all = req.get("all").is_some()
        || strings(req.get("flags"))
            .iter()
            .any(|f| f.eq_ignore_ascii_case(b"all"));
    match (
        all,
        req.get("from-tag").and_then(Value::as_bytes),
        req.get("to-tag").and_then(Value::as_bytes),
    ) {
        (false, Some(t), _) | (false, None, Some(t)) => Party::Tag(Tag::from(t)),
        _ => Party::All,
    }
}

fn required<'a>(req: &'a Value<'a>, key: &str) -> Result<&'a [u8], NgError> {
    req.get(key)
        .and_then(Value::as_bytes)
        .ok_or_else(|| NgError(format!("No {key} in message")))
}

fn sdp_of<'a>(req: &'a Value<'a>) -> Result<&'a [u8], NgError> {
    req.get("sdp")
        .and_then(Value::as_bytes)
        .ok_or_else(|| NgError::from("No SDP body in message"))
}

fn call_report(c: &CallStats) -> stats::CallReport<'_> {
    stats::CallReport {
        tags: [c.tags[0].as_deref(), c.tags[1].as_deref()],
        labels: [c.labels[0].as_deref(), c.labels[1].as_deref()],
        created: c.created,
        last_signal: c.last_signal,
        medias: c
            .medias
            .iter()
            .map(|m| stats::MediaReport {
                kind: &m.kind,
                proto: &m.proto,
                ports: m.ports,
                peers: m.peers,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_bencoded_with_sorted_keys_and_signed_integers() {
        let reply = Out::Dict(vec![
            ("result".into(), Out::str("ok")),
            (
                String::from("created").into(),
                Out::List(vec![Out::Int(0), Out::Int(-17), Out::Int(i64::MIN)]),
            ),
            ("a".into(), Out::Dict(vec![("z".into(), Out::str(""))])),
        ]);
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "d1:ad1:z0:e7:createdli0ei-17ei-9223372036854775808ee6:result2:oke"
        );
    }

    fn parsed(text: &str) -> Value<'_> {
        bencode::decode(text.as_bytes()).expect("a test request").0
    }

    #[test]
    fn media_server_commands_read_as_rtpengine_10_5_writes_them() {
        let req = parsed(
            "d7:command10:play media7:call-id2:c14:file9:hello.wav12:repeat-timesi3e8:from-tag1:ae",
        );
        assert_eq!(
            service(b"play media", &req),
            Ok(Some(MediaService::Play {
                file: "hello.wav".into(),
                repeat: 3
            }))
        );
        assert_eq!(party(&req), Party::Tag(Tag(b"a".to_vec())));
        let no_file = parsed("d7:command10:play media7:call-id2:c1e");
        assert!(service(b"play media", &no_file).is_err());
        // A digit by its character or its number; duration and volume.
        let dtmf = parsed("d4:code1:#8:durationi250e6:volumei-10e6:to-tag1:be");
        assert_eq!(
            service(b"play DTMF", &dtmf),
            Ok(Some(MediaService::Dtmf {
                code: 11,
                duration_ms: 250,
                volume: 10
            }))
        );
        assert_eq!(party(&dtmf), Party::Tag(Tag(b"b".to_vec())));
        for (code, want) in [
            ("1:7", 7),
            ("1:*", 10),
            ("1:D", 15),
            ("i12e", 12),
            ("2:13", 13),
        ] {
            let text = format!("d4:code{code}e");
            let req = parsed(&text);
            assert_eq!(
                dtmf_code(req.get("code").expect("a code")),
                Some(want),
                "{code}"
            );
        }
        for bad in ["1:E", "i16e", "2:99", "0:"] {
            let text = format!("d4:code{bad}e");
            let req = parsed(&text);
            assert_eq!(dtmf_code(req.get("code").expect("a code")), None, "{bad}");
        }
        // Blocking, silencing and recording; `all` over any tag.
        let all = parsed("d8:from-tag1:a5:flagsl3:allee");
        assert_eq!(party(&all), Party::All);
        for (cmd, name) in [
            ("block DTMF", "block DTMF"),
            ("unblock media", "unblock media"),
            ("silence media", "silence media"),
            ("unsilence media", "unsilence media"),
            ("pause recording", "pause recording"),
            ("stop media", "stop media"),
        ] {
            let s = service(cmd.as_bytes(), &all)
                .expect("valid")
                .expect("a service");
            assert_eq!(s.name(), name);
        }
        assert_eq!(service(b"frobnicate", &all), Ok(None));
    }
}
