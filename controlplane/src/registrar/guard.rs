//! Online password guessing: failed digest attempts counted per source and
//! per user. A source past the threshold within the window is refused for a
//! while; the user it guessed at is not, so the user's own phone, from its
//! own address, still registers. Sans-IO: times are inputs.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::transaction::Millis;

/// Thresholds of the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures from one source within `window_ms` that ban it (0: never).
    pub failures_before_ban: u32,
    /// The counting window.
    pub window_ms: Millis,
    /// How long a banned source is refused.
    pub ban_ms: Millis,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            failures_before_ban: 20,
            window_ms: 60_000,
            ban_ms: 300_000,
        }
    }
}

/// Failures within a window: count and when the window opened.
#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Millis,
    failures: u32,
}

impl Window {
    /// Counts one failure at `now`; the count so far in the current window.
    fn count(&mut self, now: Millis, window_ms: Millis) -> u32 {
        if now.saturating_sub(self.opened) >= window_ms {
            *self = Window {
                opened: now,
                failures: 0,
            };
        }
        self.failures += 1;
        self.failures
    }
}

/// What a failed attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; the source may go on.
    Counted {
        /// Failures of this source in the window.
        source_failures: u32,
        /// Failures against this user in the window, from any source.
        user_failures: u32,
    },
    /// This failure banned the source until the given time.
    Banned {
        /// Until when.
        until: Millis,
    },
}

/// Counters of the guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardCounters {
    /// Failed digest attempts seen.
    pub failures: u64,
    /// Sources banned.
    pub bans: u64,
    /// Requests refused because their source was banned.
    pub refused: u64,
}

/// The guard; see the module documentation.
#[derive(Debug, Default)]
pub struct AuthGuard {
    config: GuardConfig,
    sources: HashMap<IpAddr, Window>,
    users: HashMap<String, Window>,
    banned: HashMap<IpAddr, Millis>,
    counters: GuardCounters,
    /// When tables were last swept of stale entries.
    swept: Millis,
}

/// One guard for every control-plane shard: a guesser's attempts count
/// together whichever shard their Call-IDs land on.
#[derive(Debug, Clone)]
pub struct SharedGuard(std::sync::Arc<std::sync::Mutex<AuthGuard>>);

impl SharedGuard {
    /// Shares `guard`.
    pub fn new(guard: AuthGuard) -> SharedGuard {
        SharedGuard(std::sync::Arc::new(std::sync::Mutex::new(guard)))
    }

    /// The guard, for one judgement.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, AuthGuard> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Beyond this many tracked sources or users the oldest windows are swept
/// early, so a scan from many addresses cannot grow the tables without end.
const MAX_TRACKED: usize = 65_536;

impl AuthGuard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        AuthGuard {
            config,
            ..AuthGuard::default()
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> GuardCounters {
        self.counters
    }

    /// Whether `source` is refused at `now` (counted as a refusal).
    pub fn refuses(&mut self, source: IpAddr, now: Millis) -> bool {
        match self.banned.get(&source) {
            Some(until) if *until > now => {
                self.counters.refused += 1;
                true
            }
            Some(_) => {
                self.banned.remove(&source);
                false
            }
            None => false,
        }
    }

    /// Counts a failed attempt by `source` as `user`.
    pub fn on_failure(&mut self, source: IpAddr, user: &str, now: Millis) -> Verdict {
        self.sweep(now);
        self.counters.failures += 1;
        let window = self.config.window_ms;
        let new = Window {
            opened: now,
            failures: 0,
        };
        let source_failures = self.sources.entry(source).or_insert(new).count(now, window);
        let user_failures = match self.users.get_mut(user) {
            Some(w) => w.count(now, window),
            None => {
                let mut w = new;
                let n = w.count(now, window);
                self.users.insert(user.to_string(), w);
                n
            }
        };
        let limit = self.config.failures_before_ban;
        if limit > 0 && source_failures >= limit {
            let until = now + self.config.ban_ms;
            self.banned.insert(source, until);
            self.sources.remove(&source);
            self.counters.bans += 1;
            return Verdict::Banned { until };
        }
        Verdict::Counted {
            source_failures,
            user_failures,
        }
    }

    /// Drops windows and bans that have lapsed: once per window, or at once
    /// when a table is full.
    fn sweep(&mut self, now: Millis) {
        let full = self.sources.len() >= MAX_TRACKED || self.users.len() >= MAX_TRACKED;
        if !full && now.saturating_sub(self.swept) < self.config.window_ms {
            return;
        }
        self.swept = now;
        let window = self.config.window_ms;
        self.sources
            .retain(|_, w| now.saturating_sub(w.opened) < window);
        self.users
            .retain(|_, w| now.saturating_sub(w.opened) < window);
        self.banned.retain(|_, until| *until > now);
        if self.sources.len() >= MAX_TRACKED {
            self.sources.clear();
        }
        if self.users.len() >= MAX_TRACKED {
            self.users.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_source_is_banned_at_the_threshold_and_freed_after_the_ban() {
        let mut g = AuthGuard::new(GuardConfig {
            failures_before_ban: 3,
            window_ms: 60_000,
            ban_ms: 300_000,
        });
        let guesser = ip("192.0.2.9");
        assert!(matches!(
            g.on_failure(guesser, "alice", 0),
            Verdict::Counted {
                source_failures: 1,
                ..
            }
        ));
        g.on_failure(guesser, "alice", 10);
        assert_eq!(
            g.on_failure(guesser, "alice", 20),
            Verdict::Banned { until: 300_020 }
        );
        assert!(g.refuses(guesser, 21));
        assert!(g.refuses(guesser, 300_019));
        assert!(!g.refuses(guesser, 300_020));
        // The user guessed at is not refused from elsewhere.
        assert!(!g.refuses(ip("192.0.2.1"), 30));
        assert_eq!(
            g.counters(),
            GuardCounters {
                failures: 3,
                bans: 1,
                refused: 2
            }
        );
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_ban() {
        let mut g = AuthGuard::new(GuardConfig {
            failures_before_ban: 3,
            window_ms: 1_000,
            ban_ms: 5_000,
        });
        let s = ip("192.0.2.9");
        for t in [0, 600, 1_200, 1_800, 2_400, 3_000] {
            assert!(matches!(g.on_failure(s, "bob", t), Verdict::Counted { .. }));
        }
        assert!(!g.refuses(s, 3_001));
    }

    #[test]
    fn failures_against_one_user_from_many_sources_are_counted_per_user() {
        let mut g = AuthGuard::new(GuardConfig::default());
        let mut last = None;
        for i in 0..10u8 {
            last = Some(g.on_failure(IpAddr::from([198, 51, 100, i]), "carol", 5));
        }
        assert_eq!(
            last,
            Some(Verdict::Counted {
                source_failures: 1,
                user_failures: 10
            })
        );
    }

    #[test]
    fn zero_disables_the_ban() {
        let mut g = AuthGuard::new(GuardConfig {
            failures_before_ban: 0,
            ..GuardConfig::default()
        });
        let s = ip("192.0.2.9");
        for t in 0..100 {
            g.on_failure(s, "x", t);
        }
        assert!(!g.refuses(s, 101));
    }
}
