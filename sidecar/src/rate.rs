//! `limits.statementsPerSecond`: one token bucket per identity and
//! Connection, shared by every session of this sidecar.
//!
//! The bucket holds at most one second's worth of tokens (`rate`), starts
//! full, and refills continuously at `rate` per second; a statement (or an
//! HTTP request) the policy allows takes one token, and is refused when
//! none is left. A pool of N client connections therefore gets the rate in
//! total, not N times it.
//!
//! The bucket belongs to the Connection as the sidecar serves it, not to a
//! policy bundle: a policy edit keeps its state. A changed rate applies from
//! the next statement without a free refill: the tokens earned so far (at
//! the old rate) are kept, capped at the new rate.
//!
//! Across pods: each sidecar enforces its own bucket. A Deployment of R
//! replicas, each with its sidecar, may send up to R times the rate on a
//! Connection; the limit is per identity, Connection and pod.
//!
//! Memory: one bucket (a few words) per served Connection. A sidecar serves
//! one identity, so the bucket of a Connection is the identity's.

use std::sync::Mutex;
use std::time::Instant;

/// The shared token bucket of one identity on one Connection.
#[derive(Debug)]
pub struct RateLimit {
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// The rate the tokens were last counted at (`None`: no limit).
    rate: Option<u32>,
    tokens: f64,
    last: Instant,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::new()
    }
}

impl RateLimit {
    /// A full bucket.
    pub fn new() -> Self {
        RateLimit {
            bucket: Mutex::new(Bucket {
                rate: None,
                // Capped at the rate on first use: a new bucket is full.
                tokens: f64::MAX,
                last: Instant::now(),
            }),
        }
    }

    /// Takes a token under `rate` (the `statementsPerSecond` in force;
    /// `None`: no limit). `false` when the rate is exceeded.
    pub fn admit(&self, rate: Option<u32>) -> bool {
        self.admit_at(rate, Instant::now())
    }

    fn admit_at(&self, rate: Option<u32>, now: Instant) -> bool {
        // A poisoned lock only means another session panicked mid-update of
        // plain numbers: the bucket is still usable.
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        // Tokens earned since the last statement, at the rate then in force.
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        let earned_at = b.rate.or(rate);
        if let Some(old) = earned_at {
            let old = f64::from(old);
            b.tokens = (b.tokens + elapsed * old).min(old);
        }
        b.last = now;
        b.rate = rate;
        let Some(rate) = rate else {
            return true;
        };
        // A lower rate caps what was earned; a higher one adds nothing.
        b.tokens = b.tokens.min(f64::from(rate));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a client past the rate is told.
pub fn exceeded(rate: u32, connection: &str) -> String {
    format!(
        "statement refused: more than {rate} statements per second from this identity on Connection {connection:?}, the statementsPerSecond limit of the AccessPolicy (shared by all of this sidecar's sessions); retry later"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn admitted(r: &RateLimit, rate: Option<u32>, at: Instant, n: usize) -> usize {
        (0..n).filter(|_| r.admit_at(rate, at)).count()
    }

    #[test]
    fn a_full_bucket_admits_one_second_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let r = RateLimit::new();
        assert_eq!(admitted(&r, Some(3), t0, 10), 3);
        assert_eq!(
            admitted(&r, Some(3), t0 + Duration::from_millis(100), 10),
            0
        );
        // 1/3 s earns one token.
        assert_eq!(
            admitted(&r, Some(3), t0 + Duration::from_millis(340), 10),
            1
        );
        // Never more than one second's worth, however long the pause.
        assert_eq!(admitted(&r, Some(3), t0 + Duration::from_secs(60), 10), 3);
    }

    #[test]
    fn an_unchanged_rate_keeps_the_state_and_a_changed_one_gives_no_free_refill() {
        let t0 = Instant::now();
        let r = RateLimit::new();
        assert_eq!(admitted(&r, Some(2), t0, 10), 2);
        // A higher rate at once: nothing was earned, nothing is given.
        assert_eq!(admitted(&r, Some(50), t0, 10), 0);
        // Then it earns at the new rate: 100 ms at 50/s is 5 tokens.
        assert_eq!(
            admitted(&r, Some(50), t0 + Duration::from_millis(100), 10),
            5
        );
        // A lower rate caps what is left.
        let r = RateLimit::new();
        assert_eq!(admitted(&r, Some(10), t0, 5), 5);
        assert_eq!(admitted(&r, Some(2), t0, 10), 2);
    }

    #[test]
    fn no_limit_admits_everything_and_keeps_the_time() {
        let t0 = Instant::now();
        let r = RateLimit::new();
        assert_eq!(admitted(&r, None, t0, 100), 100);
        assert_eq!(admitted(&r, Some(1), t0, 10), 1);
        assert_eq!(admitted(&r, None, t0, 10), 10);
        // The limit back at once: the bucket is still empty.
        assert_eq!(admitted(&r, Some(1), t0, 10), 0);
        assert_eq!(admitted(&r, Some(1), t0 + Duration::from_secs(1), 10), 1);
    }
}
