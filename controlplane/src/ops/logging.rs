//! Logging of the `rvoip` processes: `tracing` events written as text or
//! JSON lines to stderr, a level (filter) that can be changed while
//! running, and a budget of lines per second for each place in the code,
//! so a flood of bad input cannot turn into a flood of log lines: what is
//! over the budget is counted and said in one line when the next second's
//! first line of that place is written.
//!
//! An I/O shell: it reads the clock for its budget.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use rvoip_tuning::config::{Log, LogFormat};
use tracing::{Metadata, callsite::Identifier};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, reload};

/// Changes the filter of the running process.
pub type SetLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Lines written and held back this second, per place in the code.
#[derive(Debug)]
struct Budget {
    per_sec: u32,
    started: Instant,
    places: Mutex<HashMap<Identifier, (u64, u32, u64)>>,
}

impl Budget {
    /// Whether an event of `meta` may be written now; `held` is set to
    /// the lines of that place held back in the seconds before, when this
    /// is the first line after them.
    fn allow(&self, meta: &Metadata<'_>) -> (bool, u64) {
        if self.per_sec == 0 {
            return (true, 0);
        }
        let second = self.started.elapsed().as_secs();
        let mut places = match self.places.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        let e = places.entry(meta.callsite()).or_insert((second, 0, 0));
        if e.0 != second {
            e.0 = second;
            e.1 = 0;
        }
        if e.1 >= self.per_sec {
            e.2 += 1;
            return (false, 0);
        }
        e.1 += 1;
        (true, std::mem::take(&mut e.2))
    }
}

thread_local! {
    static SAYING_HELD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Starts logging as `[log]` says (`RVOIP_LOG`, when set, is the filter
/// instead of `log.level`). Returns the way to change the filter later.
pub fn init(log: &Log) -> Option<SetLevel> {
    let filter = std::env::var("RVOIP_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let budget = Budget {
        per_sec: log.lines_per_sec,
        started: Instant::now(),
        places: Mutex::new(HashMap::new()),
    };
    let limit = FilterFn::new(move |meta| {
        if !meta.is_event() || SAYING_HELD.with(std::cell::Cell::get) {
            return true;
        }
        let (allow, held) = budget.allow(meta);
        if held > 0 {
            SAYING_HELD.with(|s| s.set(true));
            tracing::warn!(
                held_back = held,
                place = meta.name(),
                target = meta.target(),
                "log lines over the budget were held back"
            );
            SAYING_HELD.with(|s| s.set(false));
        }
        allow
    });
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(tty)
            .with_writer(std::io::stderr)
            .with_filter(limit)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(limit)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()
        .ok()?;
    Some(Box::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
        handle
            .reload(f)
            .map_err(|e| format!("log level {level:?}: {e}"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_place_gets_its_lines_per_second_and_the_rest_are_counted() {
        let b = Budget {
            per_sec: 3,
            started: Instant::now(),
            places: Mutex::new(HashMap::new()),
        };
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        static CS: Cs = Cs;
        static META: Metadata<'static> = Metadata::new(
            "flood",
            "rvoip",
            tracing::Level::WARN,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], Identifier(&CS)),
            tracing::metadata::Kind::EVENT,
        );
        let allowed = (0..10).filter(|_| b.allow(&META).0).count();
        assert_eq!(allowed, 3);
        // The next second: written again, with the 7 held back said.
        b.places
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|e| e.0 = u64::MAX);
        assert_eq!(b.allow(&META), (true, 7));
        assert_eq!(b.allow(&META), (true, 0));
    }
}
