//! The recorder: one thread that turns the packets workers copy for
//! recorded calls into WAV files, off the packet path. A worker pushes a
//! copy onto a bounded queue and never waits (a full queue is counted, not
//! waited for); this thread decodes each side with its codec, lays the two
//! sides out in time ([`rvoip_mixer::record::Timeline`]) and appends
//! stereo 16-bit PCM to `<dir>/<call-id>.wav`, left the offerer (side A),
//! right the answerer. When a recording stops — or its call is deleted —
//! the WAV header gets its final sizes and `<call-id>.json` its stop time,
//! before the order is answered: the files are complete when the reply
//! goes out.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use rvoip_codecs::resample::Resampler;
use rvoip_codecs::{Codec, Decoder, Format};
use rvoip_mixer::record::Timeline;
use rvoip_mixer::wav;

use crate::media::services::{RecPacket, pcm_rate_of};
use crate::media::transcode::LegCodec;

/// Packets waiting for the recorder, all workers.
const QUEUE: usize = 16_384;
/// Audio is final this long after the newest packet of its recording
/// (late packets within it still find their place).
const HOLD_NS: u64 = 400_000_000;

/// What is known of a call when its recording starts.
#[derive(Debug, Clone)]
pub struct RecordingSpec {
    /// The recording's number.
    pub id: u32,
    /// Directory of the files.
    pub dir: PathBuf,
    /// The Call-ID.
    pub call_id: String,
    /// The tags of side A (offerer) and side B.
    pub tags: [String; 2],
    /// What the sides speak.
    pub codecs: [Option<LegCodec>; 2],
    /// A conference room's recording instead of a call's: its name. The
    /// file is mono at 16 kHz, `room-<name>-<unix seconds>.wav`.
    pub room: Option<String>,
}

/// The rate of a room's recording (wideband; a room of narrowband callers
/// is upsampled, one of fullband ones downsampled).
const ROOM_RATE: u32 = 16_000;

enum Control {
    Start(Box<RecordingSpec>, mpsc::SyncSender<Result<(), String>>),
    Pause(u32),
    Stop(u32, mpsc::SyncSender<Result<(), String>>),
    Shutdown,
}

/// The running recorder.
#[derive(Debug)]
pub struct Recorder {
    queue: Arc<ArrayQueue<RecPacket>>,
    control: mpsc::Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

/// A file name for `call_id`: the Call-ID itself, with path separators
/// and control characters replaced (a Call-ID is the peer's text).
pub fn file_stem(call_id: &str) -> String {
    let mut s: String = call_id
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

impl Recorder {
    /// Starts the recorder thread.
    pub fn start() -> io::Result<Recorder> {
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let (tx, rx) = mpsc::channel();
        let q = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run(&q, &rx))?;
        Ok(Recorder {
            queue,
            control: tx,
            thread: Some(thread),
        })
    }

    /// The queue workers copy packets onto.
    pub fn queue(&self) -> Arc<ArrayQueue<RecPacket>> {
        Arc::clone(&self.queue)
    }

    /// Opens the files of a recording (or resumes a paused one).
    pub fn start_recording(&self, spec: RecordingSpec) -> Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control
            .send(Control::Start(Box::new(spec), tx))
            .map_err(|_| "recorder stopped".to_owned())?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| "recorder not answering".to_owned())?
    }

    /// Pauses a recording: nothing is written until it resumes, and the
    /// file goes on from where it paused.
    pub fn pause(&self, id: u32) {
        let _ = self.control.send(Control::Pause(id));
    }

    /// Completes a recording's files; returns once they are written.
    pub fn stop(&self, id: u32) -> Result<(), String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.control
            .send(Control::Stop(id, tx))
            .map_err(|_| "recorder stopped".to_owned())?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "recorder not answering".to_owned())?
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One side's decoding.
struct SideDecoder {
    formats: Vec<(u8, Format, LegCodec)>,
    decoder: Option<(u8, Decoder, Option<Resampler>)>,
}

struct Recording {
    spec: RecordingSpec,
    /// The file name without extension.
    stem: String,
    channels: u16,
    /// A room's mix at another rate than the file's: (from, resampler).
    raw_resampler: Option<(u32, Resampler)>,
    timeline: Option<Timeline>,
    rate: u32,
    sides: [SideDecoder; 2],
    wav: BufWriter<File>,
    data_len: u64,
    newest_ns: u64,
    paused: bool,
    /// Resumed after a pause: the next packet re-anchors the timeline.
    rebase: bool,
    started: f64,
    pcm: Vec<i16>,
    out: Vec<i16>,
    bytes: Vec<u8>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Recording {
    fn open(spec: RecordingSpec) -> Result<Recording, String> {
        std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let started = unix_now();
        let (stem, rate, channels) = match &spec.room {
            Some(room) => (
                file_stem(&format!("room-{room}-{}", started as u64)),
                ROOM_RATE,
                1,
            ),
            None => (
                file_stem(&spec.call_id),
                spec.codecs
                    .iter()
                    .flatten()
                    .map(pcm_rate_of)
                    .max()
                    .unwrap_or(8000)
                    .min(48_000),
                2,
            ),
        };
        let path = spec.dir.join(format!("{stem}.wav"));
        let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(&wav::header(rate, channels, 0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let formats = |me: usize| {
            let mine = spec.codecs[me];
            let theirs = spec.codecs[1 - me];
            mine.into_iter()
                .chain(theirs)
                .map(|l| (l.format.pt, l.format, l))
                .collect()
        };
        let sides = [
            SideDecoder {
                formats: formats(0),
                decoder: None,
            },
            SideDecoder {
                formats: formats(1),
                decoder: None,
            },
        ];
        let r = Recording {
            stem,
            channels,
            raw_resampler: None,
            rate,
            sides,
            timeline: None,
            wav: BufWriter::new(f),
            data_len: 0,
            newest_ns: 0,
            paused: false,
            rebase: false,
            started,
            pcm: vec![0; 5760],
            out: Vec::new(),
            bytes: Vec::new(),
            spec,
        };
        r.write_json(None)?;
        Ok(r)
    }

    fn write_json(&self, stopped: Option<f64>) -> Result<(), String> {
        let stem = &self.stem;
        let path = self.spec.dir.join(format!("{stem}.json"));
        if let Some(room) = &self.spec.room {
            let doc = serde_json::json!({
                "room": room,
                "file": format!("{stem}.wav"),
                "rate": self.rate,
                "channels": ["the room's mix: every talker"],
                "start": self.started,
                "stop": stopped,
                "seconds": self.data_len / 2 / u64::from(self.rate.max(1)),
            });
            return std::fs::write(&path, format!("{doc:#}\n"))
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        let codec = |i: usize| {
            self.spec.codecs[i].map(|l| format!("{}/{}", l.format.codec.name(), l.format.clock))
        };
        let doc = serde_json::json!({
            "call_id": self.spec.call_id,
            "from_tag": self.spec.tags[0],
            "to_tag": self.spec.tags[1],
            "codecs": [codec(0), codec(1)],
            "file": format!("{stem}.wav"),
            "rate": self.rate,
            "channels": ["from-tag party (offerer)", "to-tag party (answerer)"],
            "start": self.started,
            "stop": stopped,
            "seconds": self.data_len / 4 / u64::from(self.rate.max(1)),
        });
        std::fs::write(&path, format!("{doc:#}\n")).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn take(&mut self, p: &RecPacket) {
        if self.paused {
            return;
        }
        let side = usize::from(p.side.min(1));
        let rate = self.rate;
        let timeline = self
            .timeline
            .get_or_insert_with(|| Timeline::new(rate, p.arrival_ns));
        if std::mem::take(&mut self.rebase) {
            timeline.rebase(p.arrival_ns);
        }
        self.newest_ns = self.newest_ns.max(p.arrival_ns);
        if p.pt == crate::media::services::RAW_PCM {
            // A room's mix: PCM at the rate in `ssrc`, sample index in `ts`.
            let from = p.ssrc;
            let n = usize::from(p.len / 2).min(self.pcm.len());
            for (o, b) in self.pcm[..n].iter_mut().zip(p.payload.chunks_exact(2)) {
                *o = i16::from_le_bytes([b[0], b[1]]);
            }
            let pcm: &[i16] = if from == rate {
                &self.pcm[..n]
            } else {
                if self.raw_resampler.as_ref().is_none_or(|r| r.0 != from) {
                    self.raw_resampler = Resampler::new(from, rate).ok().map(|r| (from, r));
                }
                let Some((_, r)) = &mut self.raw_resampler else {
                    return;
                };
                self.out.resize(r.output_len(n) + 8, 0);
                let m = r.process(&self.pcm[..n], &mut self.out);
                self.out.truncate(m);
                &self.out
            };
            timeline.place(0, 0, p.ts, from.max(1), p.arrival_ns, pcm);
            return;
        }
        let s = &mut self.sides[side];
        let Some(&(_, format, leg)) = s.formats.iter().find(|f| f.0 == p.pt) else {
            return;
        };
        if matches!(format.codec, Codec::TelephoneEvent | Codec::Cn) {
            return;
        }
        if s.decoder.as_ref().is_none_or(|d| d.0 != p.pt) {
            let r = pcm_rate_of(&leg);
            let Ok(mut d) = Decoder::new(format.codec, r) else {
                return;
            };
            d.set_octet_align(leg.octet_align);
            let resampler = (r != rate).then(|| Resampler::new(r, rate).ok()).flatten();
            s.decoder = Some((p.pt, d, resampler));
        }
        let Some((_, d, resampler)) = &mut s.decoder else {
            return;
        };
        let Ok(n) = d.decode(&p.payload[..usize::from(p.len)], &mut self.pcm) else {
            return;
        };
        let pcm: &[i16] = match resampler {
            Some(r) => {
                self.out.resize(r.output_len(n) + 8, 0);
                let m = r.process(&self.pcm[..n], &mut self.out);
                self.out.truncate(m);
                &self.out
            }
            None => &self.pcm[..n],
        };
        timeline.place(side, p.ssrc, p.ts, format.clock, p.arrival_ns, pcm);
    }

    /// Writes what is final.
    fn flush(&mut self, all: bool) -> io::Result<()> {
        let Some(t) = &mut self.timeline else {
            return Ok(());
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if all {
            t.finish(&mut out);
        } else {
            let upto = t.index_at(self.newest_ns.saturating_sub(HOLD_NS));
            t.flush(upto, &mut out);
        }
        self.bytes.clear();
        if self.channels == 1 {
            self.bytes
                .extend(out.iter().step_by(2).flat_map(|s| s.to_le_bytes()));
        } else {
            self.bytes.extend(out.iter().flat_map(|s| s.to_le_bytes()));
        }
        self.wav.write_all(&self.bytes)?;
        self.data_len += self.bytes.len() as u64;
        self.out = out;
        Ok(())
    }

    fn finish(mut self) -> Result<(), String> {
        let err = |e: io::Error| e.to_string();
        self.flush(true).map_err(err)?;
        let len = self.data_len.min(u64::from(u32::MAX - 36)) as u32;
        self.wav.flush().map_err(err)?;
        let f = self.wav.get_mut();
        f.seek(SeekFrom::Start(0)).map_err(err)?;
        f.write_all(&wav::header(self.rate, self.channels, len))
            .map_err(err)?;
        f.sync_data().map_err(err)?;
        self.write_json(Some(unix_now()))
    }
}

fn run(queue: &ArrayQueue<RecPacket>, control: &mpsc::Receiver<Control>) {
    let mut recordings: HashMap<u32, Recording> = HashMap::new();
    let mut last_flush = std::time::Instant::now();
    loop {
        let msg = control.recv_timeout(Duration::from_millis(20));
        // Packets first: a stop finds every packet sent before it.
        while let Some(p) = queue.pop() {
            if let Some(r) = recordings.get_mut(&p.rec) {
                r.take(&p);
            }
        }
        match msg {
            Ok(Control::Start(spec, reply)) => {
                let id = spec.id;
                let r = match recordings.get_mut(&id) {
                    Some(r) => {
                        if r.paused {
                            r.paused = false;
                            r.rebase = true;
                        }
                        Ok(())
                    }
                    None => Recording::open(*spec).map(|r| {
                        recordings.insert(id, r);
                    }),
                };
                let _ = reply.send(r);
            }
            Ok(Control::Pause(id)) => {
                if let Some(r) = recordings.get_mut(&id) {
                    let _ = r.flush(true);
                    r.paused = true;
                }
            }
            Ok(Control::Stop(id, reply)) => {
                let r = match recordings.remove(&id) {
                    Some(r) => r.finish(),
                    None => Err("no such recording".into()),
                };
                let _ = reply.send(r);
            }
            Ok(Control::Shutdown) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                for (_, r) in recordings.drain() {
                    let _ = r.finish();
                }
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if last_flush.elapsed() >= Duration::from_millis(200) {
            for r in recordings.values_mut() {
                if !r.paused {
                    let _ = r.flush(false);
                }
            }
            last_flush = std::time::Instant::now();
        }
    }
}
