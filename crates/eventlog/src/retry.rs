//! The one backoff of the code base: how long anything that reconnects or resumes
//! (a consumer after an error, a server waiting for its log, a projection feed) waits
//! between attempts.

use std::future::Future;
use std::time::Duration;

pub use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// First wait after a failure.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between two attempts: long enough not to hammer a backend that is down,
/// short enough that a recovered one is noticed quickly.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The backoff preset: [`MIN_DELAY`] doubling up to [`MAX_DELAY`], with jitter (so that
/// many clients of one backend that failed together do not retry in lockstep), and no
/// limit on the number of attempts (giving up is the caller's decision).
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_factor(2.0)
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// A loop's running backoff: the [`backoff`] delays one after another, started over by
/// [`Backoff::reset`] once an attempt made progress (so a blip after hours of service is
/// retried quickly). Every loop that reconnects or resumes holds one.
#[derive(Debug)]
pub struct Backoff {
    delays: ExponentialBackoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    /// A backoff at its shortest delay.
    pub fn new() -> Self {
        Backoff {
            delays: backoff().build(),
        }
    }

    /// Starts over from the shortest delay.
    pub fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(MAX_DELAY)
    }

    /// Sleeps `delay` (from [`Backoff::next_delay`], usually logged first); `false` when
    /// `shutdown` came first.
    pub async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.cancelled() => false,
        }
    }
}

/// Runs `attempt` until it succeeds and returns its value, waiting a [`backoff`] delay
/// after each failure (`on_error` is told the error and the coming delay, e.g. to log
/// them). Returns `None`, without starting another attempt, once `shutdown` is
/// cancelled: it is checked before each attempt and ends a wait at once. An attempt in
/// progress is never interrupted, so it can stop cleanly on its own.
pub async fn until_ok<T, E, F, Fut>(
    shutdown: &CancellationToken,
    mut attempt: F,
    mut on_error: impl FnMut(&E, Duration),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delays = Backoff::new();
    while !shutdown.is_cancelled() {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => {
                let delay = delays.next_delay();
                on_error(&e, delay);
                if !Backoff::pause(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_never_run_out() {
        let delays: Vec<Duration> = backoff().build().take(20).collect();
        assert_eq!(delays.len(), 20);
        assert!(delays[0] >= MIN_DELAY && delays[0] <= MIN_DELAY * 2);
        // Jitter adds up to one more delay on top of the capped one.
        assert!(delays.iter().all(|d| *d <= MAX_DELAY * 2));
        assert!(delays[19] >= MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_then_returns_the_value() {
        let shutdown = CancellationToken::new();
        let mut tries = 0;
        let mut errors = Vec::new();
        let got = until_ok(
            &shutdown,
            || {
                tries += 1;
                let t = tries;
                async move {
                    if t < 3 {
                        Err(t)
                    } else {
                        Ok(t)
                    }
                }
            },
            |e: &i32, _| errors.push(*e),
        )
        .await;
        assert_eq!(got, Some(3));
        assert_eq!(errors, vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_stops_waiting_on_shutdown() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let got: Option<()> = until_ok(
            &shutdown,
            || async { Err::<(), _>("down") },
            |_, _| stop.cancel(),
        )
        .await;
        assert_eq!(got, None);
    }
}
