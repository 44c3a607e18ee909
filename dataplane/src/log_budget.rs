//! A budget for log lines about what peers send: under a flood of bad
//! requests the log gets a few lines per interval and a count of the rest,
//! never a line per packet. Sans-IO: the time is an input.

/// At most `per_interval` lines each `interval_ms`; lines past that are
/// counted and the count is reported with the next line allowed.
#[derive(Debug, Clone)]
pub struct LogBudget {
    interval_ms: u64,
    per_interval: u32,
    start: u64,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_interval` lines per `interval_ms`.
    pub const fn new(per_interval: u32, interval_ms: u64) -> Self {
        LogBudget {
            interval_ms,
            per_interval,
            start: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now_ms`: `Some(n)` with the number
    /// of lines suppressed since the last one written, or `None` (counted).
    pub fn take(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.start) >= self.interval_ms || now_ms < self.start {
            self.start = now_ms;
            self.used = 0;
        }
        if self.used >= self.per_interval {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Default for LogBudget {
    /// Ten lines a second.
    fn default() -> Self {
        LogBudget::new(10, 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_a_few_lines_and_a_count_of_the_rest() {
        let mut b = LogBudget::new(2, 1_000);
        let written: Vec<Option<u64>> = (0..5).map(|i| b.take(i)).collect();
        assert_eq!(written, [Some(0), Some(0), None, None, None]);
        assert_eq!(
            b.take(1_000),
            Some(3),
            "the next interval reports what was held back"
        );
        assert_eq!(b.take(1_001), Some(0));
        assert_eq!(b.take(1_002), None);
    }
}
