//! kubelet's container restart back-off (flowcontrol.Backoff): 10 s doubling to 5 min,
//! forgotten after 10 min without a restart. The node agent's pods and `podctl run
//! --restart` pods are kept up with it alike.

use std::time::{Duration, Instant};

const INITIAL: Duration = Duration::from_secs(10);
const MAX: Duration = Duration::from_secs(300);

/// One container's back-off entry.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub delay: Duration,
    updated: Instant,
}

impl Backoff {
    /// The next delay after one that was `previous` (none, or forgotten after 2 × max).
    pub fn next(previous: Option<Backoff>, now: Instant) -> Backoff {
        let delay = match previous {
            Some(b) if now.duration_since(b.updated) <= 2 * MAX => (b.delay * 2).min(MAX),
            _ => INITIAL,
        };
        Backoff { delay, updated: now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_maximum_and_are_forgotten() {
        let now = Instant::now();
        let first = Backoff::next(None, now);
        assert_eq!(first.delay, INITIAL);
        let mut last = first;
        for _ in 0..10 {
            last = Backoff::next(Some(last), now);
        }
        assert_eq!(last.delay, MAX);
        assert_eq!(Backoff::next(Some(last), now + 3 * MAX).delay, INITIAL);
    }
}
