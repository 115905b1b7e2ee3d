//! How many denials a guest may have logged: a guest that hammers a denied address must not
//! flood stderr or the audit log, yet none of its denials go unreported (they are counted and
//! summarised).

use super::AuditEvent;

/// How many denials per guest are printed and audited each second; the rest are counted.
pub const DENIALS_PER_SECOND: u32 = 100;

/// A token bucket for one guest's denials: [`DENIALS_PER_SECOND`] a second, as a burst or
/// spread; what it refuses is counted for a summary.
#[derive(Debug)]
pub struct DenialBudget {
    tokens: f64,
    last: std::time::Instant,
    /// Denials not logged since the last summary, and when the first of them was.
    suppressed: u64,
    since: Option<std::time::Instant>,
}

impl Default for DenialBudget {
    fn default() -> Self {
        DenialBudget {
            tokens: f64::from(DENIALS_PER_SECOND),
            last: std::time::Instant::now(),
            suppressed: 0,
            since: None,
        }
    }
}

impl DenialBudget {
    /// Whether this denial is logged; if not, it is counted.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let rate = f64::from(DENIALS_PER_SECOND);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            self.since.get_or_insert(now);
            false
        }
    }

    /// The count to report, once a second at most: denials suppressed since the last summary
    /// and how long that was.
    pub fn summary_due(&mut self, now: std::time::Instant) -> Option<(u64, std::time::Duration)> {
        let since = self.since?;
        if now.saturating_duration_since(since) < std::time::Duration::from_secs(1) {
            return None;
        }
        self.summary(now)
    }

    /// The count to report now, whatever the time (the guest is ending).
    pub fn summary(&mut self, now: std::time::Instant) -> Option<(u64, std::time::Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.suppressed);
        Some((count, now.saturating_duration_since(since)))
    }
}

/// The `use` of the audit event that reports denials not logged one by one.
pub const SUPPRESSED_USE: &str = "denials-suppressed";

/// The audit event for `count` denials that went unlogged: `use` is
/// `denials-suppressed`, `addr` the count, `rule` the rate limit.
pub fn suppressed_event(guest: &str, count: u64) -> AuditEvent {
    AuditEvent::refused(
        guest,
        SUPPRESSED_USE,
        count,
        Some(format!(
            "rate-limit: {DENIALS_PER_SECOND} denials a second per guest"
        )),
    )
}

/// The stderr line for the same.
pub fn suppressed_message(guest: &str, count: u64, over: std::time::Duration) -> String {
    format!(
        "sockbox: {count} more denials (guest {guest:?}) in the last {:.1} s were not printed or \
         audited one by one (at most {DENIALS_PER_SECOND} a second per guest)",
        over.as_secs_f64()
    )
}
