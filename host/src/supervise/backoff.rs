//! When a guest that ended is started again, and when it is given up: exponential backoff
//! that resets once a run was stable, and a cap on restarts within a sliding window.
//!
//! Pure over the `Instant`s it is handed, so it is tested without waiting. (A backoff crate
//! would cover the doubling only; the restart window and the stable-run reset are the part
//! that matters here, so the few lines stay here.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How restarts are paced and capped; `[supervisor]` in the manifest overrides each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartSettings {
    /// Wait before the first restart (`restart-delay`, default 100 ms); doubles each time.
    pub first_delay: Duration,
    /// The longest wait (`max-restart-delay`, default 5 s).
    pub max_delay: Duration,
    /// A run at least this long resets the wait to `first_delay` (`stable-after`, 10 s).
    pub stable_after: Duration,
    /// Most restarts within `window` (`max-restarts`, default 5); one more gives the guest up.
    pub max_restarts: u32,
    /// The sliding window restarts are counted in (`restart-window`, default 60 s).
    pub window: Duration,
    /// How long a guest asked to stop gets before it is killed (`stop-grace`, default 5 s).
    pub grace: Duration,
}

impl Default for RestartSettings {
    fn default() -> Self {
        RestartSettings {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }
}

/// What to do after a guest's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Start it again after this wait; `restart` counts restarts within the window (from 1).
    Restart { after: Duration, restart: u32 },
    /// Too many restarts within the window.
    GiveUp,
}

/// One guest instance's restart history.
#[derive(Debug)]
pub(super) struct Backoff {
    settings: RestartSettings,
    next_delay: Duration,
    restarts: VecDeque<Instant>,
}

impl Backoff {
    pub(super) fn new(settings: RestartSettings) -> Backoff {
        Backoff {
            settings,
            next_delay: settings.first_delay,
            restarts: VecDeque::new(),
        }
    }

    /// A run that lasted `ran` ended at `now`: restart after a wait, or give up.
    pub(super) fn after_run(&mut self, now: Instant, ran: Duration) -> Next {
        if ran >= self.settings.stable_after {
            self.next_delay = self.settings.first_delay;
        }
        while let Some(&oldest) = self.restarts.front() {
            if now.duration_since(oldest) >= self.settings.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= self.settings.max_restarts as usize {
            return Next::GiveUp;
        }
        self.restarts.push_back(now);
        let after = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.settings.max_delay);
        Next::Restart {
            after,
            restart: self.restarts.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RestartSettings {
        RestartSettings {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            stable_after: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_up_to_the_cap_then_the_guest_is_given_up() {
        let mut backoff = Backoff::new(settings());
        let start = Instant::now();
        let waits: Vec<Next> = (0..6)
            .map(|i| backoff.after_run(start + Duration::from_secs(i), ms(1)))
            .collect();
        let restart = |after, restart| Next::Restart {
            after: ms(after),
            restart,
        };
        assert_eq!(
            waits,
            vec![
                restart(100, 1),
                restart(200, 2),
                restart(400, 3),
                restart(500, 4),
                restart(500, 5),
                Next::GiveUp
            ]
        );
    }

    #[test]
    fn a_stable_run_resets_the_wait() {
        let mut backoff = Backoff::new(settings());
        let start = Instant::now();
        backoff.after_run(start, ms(1));
        backoff.after_run(start + ms(10), ms(1));
        let next = backoff.after_run(start + Duration::from_secs(20), Duration::from_secs(19));
        assert_eq!(
            next,
            Next::Restart {
                after: ms(100),
                restart: 3
            }
        );
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let mut backoff = Backoff::new(RestartSettings {
            max_restarts: 2,
            ..settings()
        });
        let start = Instant::now();
        assert!(matches!(
            backoff.after_run(start, ms(1)),
            Next::Restart { .. }
        ));
        assert!(matches!(
            backoff.after_run(start + ms(1), ms(1)),
            Next::Restart { .. }
        ));
        assert_eq!(backoff.after_run(start + ms(2), ms(1)), Next::GiveUp);
        let later = start + Duration::from_secs(61);
        assert!(matches!(
            backoff.after_run(later, ms(1)),
            Next::Restart { restart: 1, .. }
        ));
    }

    #[test]
    fn no_restarts_allowed_gives_up_at_once() {
        let mut backoff = Backoff::new(RestartSettings {
            max_restarts: 0,
            ..settings()
        });
        assert_eq!(backoff.after_run(Instant::now(), ms(1)), Next::GiveUp);
    }
}
