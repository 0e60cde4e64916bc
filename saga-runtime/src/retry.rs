//! Retry policies: how many attempts a step or compensation gets, how long to
//! wait between them, and how long one attempt may take.
//!
//! A policy is plain data so the `#[step(retry(...))]` attribute can build it in
//! a `static`, and a caller can override it per saga run with
//! [`SagaOptions::retry`](crate::SagaOptions::retry).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many attempts, how far apart, and how long each may take.
///
/// ```
/// use saga_runtime::{Backoff, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = RetryPolicy::attempts(5)
///     .backoff(Backoff::exponential(Duration::from_millis(20), Duration::from_secs(1)))
///     .timeout(Duration::from_secs(2));
/// assert_eq!(policy.max_attempts(), Some(5));
/// assert!(policy.allows_attempt(5) && !policy.allows_attempt(6));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "LoggedPolicy")]
pub struct RetryPolicy {
    /// `None` means retry forever.
    max_attempts: Option<u32>,
    backoff: Backoff,
    timeout: Option<Duration>,
}

impl RetryPolicy {
    /// The default for steps before the pivot: 3 attempts, exponential backoff
    /// from 100 ms to 5 s with jitter, no per-attempt timeout.
    pub const STEP: RetryPolicy = RetryPolicy {
        max_attempts: Some(3),
        backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)),
        timeout: None,
    };

    /// The default for steps after the pivot and for compensations: retry
    /// forever, exponential backoff from 100 ms capped at 30 s, with jitter.
    /// After the pivot there is no way back, and a compensation that gives up
    /// leaves the saga stuck, so both keep trying until told otherwise.
    pub const FOREVER: RetryPolicy = RetryPolicy {
        max_attempts: None,
        backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)),
        timeout: None,
    };

    /// A policy allowing at most `n` attempts, with no backoff. `n` counts
    /// the first try: `attempts(1)` is a single try without retries.
    ///
    /// Zero attempts would never run the step, and is refused as the
    /// attribute refuses `attempts = 0`: not here (a `const fn` cannot
    /// fail), but when the options are applied: `run_with` or `start_with`
    /// with [`SagaOptions::retry`](crate::SagaOptions::retry) or
    /// [`compensation_retry`](crate::SagaOptions::compensation_retry)
    /// given such a policy returns
    /// [`Error::InvalidRetryPolicy`](crate::Error::InvalidRetryPolicy),
    /// and nothing runs.
    ///
    /// ```
    /// # use saga_runtime::RetryPolicy;
    /// assert_eq!(RetryPolicy::attempts(3).max_attempts(), Some(3));
    /// // Kept as asked, and refused when applied:
    /// assert_eq!(RetryPolicy::attempts(0).max_attempts(), Some(0));
    /// ```
    pub const fn attempts(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: Some(n),
            backoff: Backoff::none(),
            timeout: None,
        }
    }

    /// A policy that never gives up, with no backoff.
    ///
    /// ```
    /// # use saga_runtime::RetryPolicy;
    /// assert_eq!(RetryPolicy::forever().max_attempts(), None);
    /// ```
    pub const fn forever() -> RetryPolicy {
        RetryPolicy {
            max_attempts: None,
            backoff: Backoff::none(),
            timeout: None,
        }
    }

    /// A policy of exactly one attempt.
    ///
    /// ```
    /// # use saga_runtime::RetryPolicy;
    /// assert!(!RetryPolicy::once().allows_attempt(2));
    /// ```
    pub const fn once() -> RetryPolicy {
        RetryPolicy::attempts(1)
    }

    /// The same policy with at most `n` attempts; zero is refused when the
    /// options are applied, as for [`attempts`](Self::attempts).
    pub const fn with_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = Some(n);
        self
    }

    /// The same policy, retrying forever.
    pub const fn with_unlimited_attempts(mut self) -> RetryPolicy {
        self.max_attempts = None;
        self
    }

    /// Replaces the wait between attempts.
    pub const fn backoff(mut self, backoff: Backoff) -> RetryPolicy {
        self.backoff = backoff;
        self
    }

    /// Bounds each attempt: an attempt still running after `timeout` is dropped
    /// and counts as a retryable failure (whose outcome is unknown: it may
    /// have taken effect).
    ///
    /// The timeout must be positive. `Duration::ZERO` would cut off every
    /// attempt that waits for anything, and is refused as the attribute
    /// refuses `timeout = "0s"`: when the options are applied, `run_with`
    /// or `start_with` returns
    /// [`Error::InvalidRetryPolicy`](crate::Error::InvalidRetryPolicy), and
    /// nothing runs. For no timeout, use [`no_timeout`](Self::no_timeout).
    ///
    /// ```
    /// # use saga_runtime::RetryPolicy;
    /// # use std::time::Duration;
    /// let p = RetryPolicy::attempts(2).timeout(Duration::from_millis(50));
    /// assert_eq!(p.attempt_timeout(), Some(Duration::from_millis(50)));
    /// ```
    pub const fn timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.timeout = Some(timeout);
        self
    }

    /// Removes the per-attempt timeout.
    pub const fn no_timeout(mut self) -> RetryPolicy {
        self.timeout = None;
        self
    }

    /// The most attempts this policy allows, `None` for unlimited.
    pub const fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The wait between attempts.
    pub const fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// The per-attempt timeout, if any.
    pub const fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Why this policy could never work, if it could not: what
    /// [`Error::InvalidRetryPolicy`](crate::Error::InvalidRetryPolicy) says.
    /// The attributes refuse the same at compile time.
    pub(crate) const fn refusal(&self) -> Option<&'static str> {
        if let Some(0) = self.max_attempts {
            return Some(
                "zero attempts would never run it: use `RetryPolicy::attempts(1)` for a single try without retries, a larger number, or `RetryPolicy::forever()`",
            );
        }
        if let Some(timeout) = self.timeout
            && timeout.is_zero()
        {
            return Some(
                "a timeout of zero would never let an attempt finish: give a positive duration, or use `no_timeout()`",
            );
        }
        None
    }

    /// Whether attempt number `attempt` (counting from 1) may run.
    pub const fn allows_attempt(&self, attempt: u32) -> bool {
        match self.max_attempts {
            Some(max) => attempt <= max,
            None => true,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::STEP
    }
}

/// The wait before the next attempt.
///
/// Exponential backoff doubles from `initial` up to `max`. Jitter (a fraction
/// from 0 to 1, default 0.5 for exponential) shortens each wait by a random part
/// of itself, so that many sagas failing together do not retry in lockstep.
///
/// ```
/// use saga_runtime::Backoff;
/// use std::time::Duration;
///
/// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50)).jitter(0.0);
/// assert_eq!(b.delay(1, 0), Duration::from_millis(10));
/// assert_eq!(b.delay(2, 0), Duration::from_millis(20));
/// assert_eq!(b.delay(4, 0), Duration::from_millis(50)); // capped
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "LoggedBackoff")]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    exponential: bool,
    jitter: f64,
}

/// A [`RetryPolicy`] as a log holds it (a run's retry overrides are
/// logged), made sound when read back: at least one attempt, and no
/// timeout of zero (a run refuses both; only a log damaged by hand has
/// them).
#[derive(Deserialize)]
struct LoggedPolicy {
    max_attempts: Option<u32>,
    backoff: Backoff,
    timeout: Option<Duration>,
}

impl From<LoggedPolicy> for RetryPolicy {
    fn from(logged: LoggedPolicy) -> RetryPolicy {
        RetryPolicy {
            max_attempts: logged.max_attempts.map(|n| n.max(1)),
            backoff: logged.backoff,
            timeout: logged.timeout.filter(|t| !t.is_zero()),
        }
    }
}

/// A [`Backoff`] as a log holds it (a run's retry overrides are logged),
/// made sound when read back: a damaged jitter becomes none.
#[derive(Deserialize)]
struct LoggedBackoff {
    initial: Duration,
    max: Duration,
    exponential: bool,
    /// JSON has no NaN: written as `null`.
    jitter: Option<f64>,
}

impl From<LoggedBackoff> for Backoff {
    fn from(logged: LoggedBackoff) -> Backoff {
        let jitter = logged.jitter.unwrap_or(0.0);
        Backoff {
            initial: logged.initial,
            max: logged.max,
            exponential: logged.exponential,
            jitter: 0.0,
        }
        .jitter(jitter)
    }
}

impl Backoff {
    /// Retry at once.
    pub const fn none() -> Backoff {
        Backoff {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            exponential: false,
            jitter: 0.0,
        }
    }

    /// Wait the same `delay` before every retry (no jitter unless asked).
    ///
    /// ```
    /// # use saga_runtime::Backoff;
    /// # use std::time::Duration;
    /// assert_eq!(Backoff::fixed(Duration::from_secs(1)).delay(7, 42), Duration::from_secs(1));
    /// ```
    pub const fn fixed(delay: Duration) -> Backoff {
        Backoff {
            initial: delay,
            max: delay,
            exponential: false,
            jitter: 0.0,
        }
    }

    /// Double the wait from `initial` after each failure, never above `max`,
    /// with jitter 0.5.
    pub const fn exponential(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            exponential: true,
            jitter: 0.5,
        }
    }

    /// Sets the jitter fraction, clamped to `0.0..=1.0`: each wait is shortened
    /// by up to this fraction of itself.
    pub const fn jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The jitter fraction.
    pub const fn jitter_fraction(&self) -> f64 {
        self.jitter
    }

    /// The wait after failed attempt number `attempt` (from 1). `entropy` is
    /// any number; the same `(attempt, entropy)` always gives the same wait.
    pub fn delay(&self, attempt: u32, entropy: u64) -> Duration {
        let base = if self.exponential {
            let doublings = attempt.saturating_sub(1).min(63);
            let factor = 1u64 << doublings;
            // In u128 nanoseconds, which hold any duration times 2^63.
            let nanos = self.initial.as_nanos().saturating_mul(u128::from(factor));
            let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
            Duration::new(secs, (nanos % 1_000_000_000) as u32).min(self.max)
        } else {
            self.initial
        };
        if self.jitter == 0.0 || base.is_zero() {
            return base;
        }
        let unit = (splitmix64(entropy ^ u64::from(attempt)) >> 11) as f64 / (1u64 << 53) as f64;
        // Not `mul_f64`, which panics where the float cannot be a duration
        // (a wait of ~u64::MAX seconds, read from a damaged log).
        Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 - self.jitter * unit)).unwrap_or(base)
    }
}

/// A tiny, well-mixed hash used to draw jitter without a random-number crate.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_policy_reads_back_the_same_and_a_damaged_jitter_as_none() {
        let policy = RetryPolicy::attempts(3)
            .backoff(Backoff::exponential(
                Duration::from_millis(10),
                Duration::from_secs(1),
            ))
            .timeout(Duration::from_millis(250));
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), policy);
        let damaged = json.replace("\"jitter\":0.5", "\"jitter\":7.0");
        assert_ne!(damaged, json);
        let read: RetryPolicy = serde_json::from_str(&damaged).unwrap();
        assert_eq!(read.backoff_policy().jitter_fraction(), 1.0);
        // Whatever the log said, a wait never panics, and a policy allows
        // at least one attempt.
        let huge = r#"{"max_attempts":0,"backoff":{"initial":{"secs":18446744073709551615,"nanos":0},"max":{"secs":18446744073709551615,"nanos":0},"exponential":false,"jitter":1e-300},"timeout":null}"#;
        let read: RetryPolicy = serde_json::from_str(huge).unwrap();
        assert!(read.allows_attempt(1));
        let _ = read.backoff_policy().delay(5, 42);
        let nan = RetryPolicy::attempts(2)
            .backoff(Backoff::fixed(Duration::from_secs(1)).jitter(f64::NAN));
        assert_eq!(nan.backoff_policy().jitter_fraction(), 0.0);
        let json = serde_json::to_string(&nan).unwrap();
        assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), nan);
    }

    #[test]
    fn a_policy_that_could_never_work_is_kept_as_asked_and_refused() {
        assert_eq!(RetryPolicy::attempts(0).max_attempts(), Some(0));
        assert_eq!(RetryPolicy::STEP.with_attempts(0).max_attempts(), Some(0));
        assert!(
            RetryPolicy::attempts(0)
                .refusal()
                .unwrap()
                .contains("zero attempts")
        );
        let zero = RetryPolicy::attempts(3).timeout(Duration::ZERO);
        assert_eq!(zero.attempt_timeout(), Some(Duration::ZERO));
        assert!(zero.refusal().unwrap().contains("a timeout of zero"));
        for fine in [
            RetryPolicy::once(),
            RetryPolicy::forever(),
            RetryPolicy::STEP,
            RetryPolicy::FOREVER,
            RetryPolicy::attempts(3).timeout(Duration::from_nanos(1)),
            zero.no_timeout(),
        ] {
            assert_eq!(fine.refusal(), None, "{fine:?}");
        }
        // A log damaged by hand is read back sound.
        let json = serde_json::to_string(&zero.with_attempts(0)).unwrap();
        let read: RetryPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(read.max_attempts(), Some(1));
        assert_eq!(read.attempt_timeout(), None);
        assert_eq!(read.refusal(), None);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..10 {
            for entropy in 0..200 {
                let d = b.delay(attempt, entropy);
                let full = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
                    .jitter(0.0)
                    .delay(attempt, entropy);
                assert!(
                    d <= full && d >= full / 2,
                    "{d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn jitter_varies_with_entropy() {
        let b = Backoff::fixed(Duration::from_secs(1)).jitter(1.0);
        let distinct: std::collections::HashSet<_> = (0..50).map(|e| b.delay(1, e)).collect();
        assert!(distinct.len() > 40);
    }

    #[test]
    fn exponential_does_not_overflow() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60)).jitter(0.0);
        assert_eq!(b.delay(u32::MAX, 0), Duration::from_secs(60));
    }

    #[test]
    fn an_exponential_wait_beyond_u64_nanoseconds_is_not_cut_short() {
        // 2^64 ns and more (~585 years) once wrapped to a wait of zero.
        let initial = Duration::from_nanos(u64::MAX) + Duration::from_nanos(1);
        let b = Backoff::exponential(initial, Duration::MAX).jitter(0.0);
        assert_eq!(b.delay(1, 0), initial);
        assert_eq!(b.delay(2, 0), initial * 2);
        let huge = Duration::from_secs(20_000_000_000);
        let b = Backoff::exponential(huge, Duration::MAX).jitter(0.0);
        assert_eq!(b.delay(1, 0), huge);
    }
}
