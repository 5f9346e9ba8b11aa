//! Exponential backoff for retry loops: the wait grows by a factor up to a cap,
//! and a wait can be cut short by the shutdown token.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits that start at `initial` and grow by `factor` after each use, never past `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    factor: u32,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff whose first wait is `initial`; each later wait is the previous
    /// one times `factor`, at most `cap` (`Duration::MAX` for none).
    pub const fn new(initial: Duration, factor: u32, cap: Duration) -> Self {
        Self { initial, factor, cap, current: initial }
    }

    /// The common case: doubling from `initial` up to `cap`.
    pub const fn doubling(initial: Duration, cap: Duration) -> Self {
        Self::new(initial, 2, cap)
    }

    /// The wait the next call to [`Backoff::next`] returns.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Returns the wait to use now and grows the following one.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Duration {
        let now = self.current;
        self.current = self.current.saturating_mul(self.factor).min(self.cap);
        now
    }

    /// Starts again from the initial wait (after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Sleeps for [`Backoff::next`]; false if `shutdown` was cancelled first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.next();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::doubling(MS(100), MS(500));
        let waits: Vec<_> = (0..5).map(|_| b.next()).collect();
        assert_eq!(waits, [MS(100), MS(200), MS(400), MS(500), MS(500)]);
        b.reset();
        assert_eq!(b.peek(), MS(100));
        assert_eq!(b.next(), MS(100));
    }

    #[test]
    fn other_factors_and_no_cap_saturate() {
        let mut b = Backoff::new(MS(100), 4, Duration::MAX);
        let waits: Vec<_> = (0..3).map(|_| b.next()).collect();
        assert_eq!(waits, [MS(100), MS(400), MS(1600)]);
        let mut huge = Backoff::new(Duration::MAX / 2, 4, Duration::MAX);
        huge.next();
        assert_eq!(huge.next(), Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_current_step() {
        let token = CancellationToken::new();
        let mut b = Backoff::doubling(MS(200), Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        assert!(b.wait(&token).await);
        assert_eq!(start.elapsed(), MS(200));
        assert!(b.wait(&token).await);
        assert_eq!(start.elapsed(), MS(600));
        assert_eq!(b.peek(), MS(800));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stops_at_cancellation() {
        let token = CancellationToken::new();
        let mut b = Backoff::doubling(Duration::from_secs(5), Duration::from_secs(5));
        let start = tokio::time::Instant::now();
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(MS(300)).await;
            cancel.cancel();
        });
        assert!(!b.wait(&token).await);
        assert_eq!(start.elapsed(), MS(300));
        token.cancel();
        assert!(!b.wait(&token).await);
        assert_eq!(start.elapsed(), MS(300));
    }
}
