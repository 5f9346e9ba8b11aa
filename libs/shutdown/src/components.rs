//! The long-lived components of one service, run together under its shutdown
//! token: the first to end before shutdown was requested (with an error, or
//! with `Ok`) stops the service, so no process stays half alive.

use std::{error::Error, fmt, future::Future, pin::Pin, time::Duration};

use futures::{stream::FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

/// A boxed error, the default error type of [`Components`].
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What the components of one service fail with: any error that can be seen
/// as a `std::error::Error` (`anyhow::Error` and [`BoxError`] can).
pub trait ComponentFailure: AsRef<dyn Error + Send + Sync + 'static> + fmt::Debug + Send + 'static {}

impl<E: AsRef<dyn Error + Send + Sync + 'static> + fmt::Debug + Send + 'static> ComponentFailure for E {}

type Running<'a, E> = Pin<Box<dyn Future<Output = (&'static str, Result<(), E>)> + Send + 'a>>;

/// Why a service stopped on its own.
#[derive(Debug)]
pub enum ComponentError<E = BoxError> {
    /// A component returned an error.
    Failed {
        /// The component's name.
        component: &'static str,
        /// Its error.
        source: E,
    },
    /// A component returned `Ok` before shutdown was requested.
    Ended {
        /// The component's name.
        component: &'static str,
    },
}

impl<E> fmt::Display for ComponentError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { component, .. } => write!(f, "{component} failed"),
            Self::Ended { component } => write!(f, "{component} ended before shutdown was requested"),
        }
    }
}

/// The component's own error is the source, as it is: its kind can be asked for.
impl<E: ComponentFailure + Sync> Error for ComponentError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed { source, .. } => Some(source.as_ref()),
            Self::Ended { .. } => None,
        }
    }
}

impl<E> ComponentError<E> {
    /// The component that ended.
    pub fn component(&self) -> &'static str {
        match self {
            Self::Failed { component, .. } | Self::Ended { component } => component,
        }
    }
}

/// Named futures supervised together; see [`Components::run`].
pub struct Components<'a, E = BoxError> {
    shutdown: CancellationToken,
    grace: Duration,
    running: FuturesUnordered<Running<'a, E>>,
}

impl<E> fmt::Debug for Components<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Components").field("grace", &self.grace).field("running", &self.running.len()).finish()
    }
}

impl<'a, E: ComponentFailure> Components<'a, E> {
    /// Components stopped by `shutdown`, given [`crate::DEFAULT_GRACE`] to drain.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown, grace: crate::DEFAULT_GRACE, running: FuturesUnordered::new() }
    }

    /// How long the others may drain once the token is cancelled.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds a component. It must watch the shutdown token (or something
    /// cancelled after it) and return once it has drained.
    pub fn add<F, X>(&mut self, name: &'static str, component: F)
    where
        F: Future<Output = Result<(), X>> + Send + 'a,
        X: Into<E>,
    {
        self.running.push(Box::pin(async move { (name, component.await.map_err(Into::into)) }));
    }

    /// Runs every component until all have ended. The first to end before
    /// the token was cancelled, with an error or with `Ok`, cancels it (logged
    /// at ERROR with `component` and `error`) and is returned; the others get
    /// the grace period to drain, counted from the cancellation, after which
    /// they are dropped. A component failing while draining is returned too,
    /// when nothing failed before.
    pub async fn run(self) -> Result<(), ComponentError<E>> {
        let Self { shutdown, grace, mut running } = self;
        let mut first: Option<ComponentError<E>> = None;
        let mut deadline = None;
        loop {
            if deadline.is_none() && shutdown.is_cancelled() {
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            let next = match deadline {
                None => tokio::select! {
                    next = running.next() => next,
                    _ = shutdown.cancelled() => continue,
                },
                Some(at) => match tokio::time::timeout_at(at, running.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let names = running.len();
                        tracing::warn!(
                            still_running = names,
                            grace_s = grace.as_secs_f64(),
                            "components did not stop within the grace period"
                        );
                        break;
                    }
                },
            };
            let Some((component, result)) = next else { break };
            let stopping = shutdown.is_cancelled();
            let ended = match result {
                Err(source) => ComponentError::Failed { component, source },
                Ok(()) if !stopping => ComponentError::Ended { component },
                Ok(()) => continue,
            };
            let error = reason(&ended);
            if stopping {
                tracing::warn!(component, error, "component failed while stopping");
            } else {
                tracing::error!(component, error, "component ended, stopping the service");
                shutdown.cancel();
            }
            first.get_or_insert(ended);
        }
        first.map_or(Ok(()), Err)
    }
}

/// The reason a component ended: its error's chain, or that it returned.
fn reason<E: ComponentFailure>(e: &ComponentError<E>) -> String {
    match e {
        ComponentError::Ended { .. } => "ended before shutdown was requested".to_string(),
        ComponentError::Failed { source, .. } => {
            let source = source.as_ref();
            let mut out = source.to_string();
            let mut next = source.source();
            while let Some(cause) = next {
                out.push_str(": ");
                out.push_str(&cause.to_string());
                next = cause.source();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };

    use super::*;

    /// Waits for the token, then drains for `drain`, then says it drained.
    async fn drains(token: CancellationToken, drain: Duration, drained: Arc<AtomicBool>) -> Result<(), BoxError> {
        token.cancelled().await;
        tokio::time::sleep(drain).await;
        drained.store(true, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_component_stops_the_others_and_names_itself() {
        let token = CancellationToken::new();
        let drained = Arc::new(AtomicBool::new(false));
        let mut c = Components::<BoxError>::new(token.clone());
        c.add("sink", drains(token.clone(), Duration::from_secs(1), drained.clone()));
        c.add("telemetry", async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Err::<(), BoxError>("sampler gone".into())
        });
        let started = tokio::time::Instant::now();
        let err = c.run().await.expect_err("a failure stops the service");
        assert_eq!(err.component(), "telemetry");
        assert!(matches!(err, ComponentError::Failed { .. }), "{err:?}");
        assert_eq!(reason(&err), "sampler gone");
        assert!(token.is_cancelled());
        assert!(drained.load(Ordering::SeqCst), "the sink drained before run returned");
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_shutdown_returns_ok() {
        let token = CancellationToken::new();
        let drained = Arc::new(AtomicBool::new(false));
        let mut c = Components::<BoxError>::new(token.clone());
        c.add("a", drains(token.clone(), Duration::from_secs(2), drained.clone()));
        c.add("b", drains(token.clone(), Duration::ZERO, Arc::new(AtomicBool::new(false))));
        let t = token.clone();
        c.add("signal", async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            t.cancel();
            Ok::<(), BoxError>(())
        });
        c.run().await.expect("clean shutdown");
        assert!(drained.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_returning_ok_early_is_an_error() {
        let token = CancellationToken::new();
        let mut c = Components::<BoxError>::new(token.clone());
        c.add("inventory", drains(token.clone(), Duration::ZERO, Arc::new(AtomicBool::new(false))));
        c.add("retention", async { Ok::<(), BoxError>(()) });
        let err = c.run().await.expect_err("an early Ok stops the service");
        assert!(matches!(err, ComponentError::Ended { component: "retention" }), "{err:?}");
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_that_does_not_drain_is_dropped_after_the_grace() {
        let token = CancellationToken::new();
        let mut c = Components::<BoxError>::new(token.clone()).grace(Duration::from_secs(4));
        c.add("stuck", std::future::pending::<Result<(), BoxError>>());
        c.add("broken", async { Err::<(), BoxError>("boom".into()) });
        let started = tokio::time::Instant::now();
        let err = c.run().await.expect_err("failure");
        assert_eq!(err.component(), "broken");
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_while_draining_is_returned() {
        let token = CancellationToken::new();
        token.cancel();
        let mut c = Components::<BoxError>::new(token.clone());
        c.add("flush", async { Err::<(), BoxError>("insert refused".into()) });
        let err = c.run().await.expect_err("failure while draining");
        assert_eq!(err.to_string(), "flush failed");
    }
}
