//! The monitor's work loop: answers capability and drain requests, applies
//! cancels, runs assignments; on shutdown (or when its assignment consumer is
//! gone) it takes no new work and lets running tasks finish within the grace.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::{
    service::{endpoint::Endpoint, Service},
    Subscriber,
};
use futures::StreamExt;
use hwsched_bus::{consume, now_ms, Bus};
use hwsched_proto::v1::{CancelTask, DrainWorker, WorkerCapabilities, WorkerHeartbeat, WorkerState};
use hwsched_telemetry::Telemetry;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{drain::Drain, executor::Executor};

/// How long running tasks may finish after shutdown is requested before they are killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(20);

/// Everything the work loop reads and answers.
pub struct Work {
    /// The monitor's connection.
    pub bus: Bus,
    /// The NATS service `hwsched-monitor` the endpoints belong to.
    pub service: Service,
    /// `hws.workers.<id>.capabilities` requests.
    pub caps_requests: Endpoint,
    /// `hws.workers.<id>.drain` requests.
    pub drain_requests: Endpoint,
    /// This worker's stored drain.
    pub drain: Drain,
    /// Assignments to run; `None` in observe-only mode.
    pub assignments: Option<consume::Messages>,
    /// `hws.control.cancel`.
    pub cancels: Subscriber,
    /// Runs assignments.
    pub executor: Arc<Executor>,
    /// Current capabilities.
    pub caps: watch::Receiver<WorkerCapabilities>,
    /// The state heartbeats report.
    pub state: watch::Sender<WorkerState>,
    /// The last heartbeat sent, for a state change to be announced at once.
    pub last_heartbeat: Arc<Mutex<Option<WorkerHeartbeat>>>,
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work").field("executor", &self.executor).finish_non_exhaustive()
    }
}

impl Work {
    /// Serves until `shutdown` (or until the assignment consumer is gone),
    /// then leaves; `telemetry_stop` is cancelled once it has left, however
    /// it ends, so heartbeats say DRAINING while tasks finish.
    pub async fn run(
        mut self,
        telemetry: &Telemetry,
        shutdown: &CancellationToken,
        telemetry_stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let _stop_telemetry = telemetry_stop.drop_guard();
        let kill = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let served = self.serve(&mut tasks, &kill, shutdown).await;
        self.leave(tasks, kill, telemetry).await;
        served
    }

    async fn serve(
        &mut self,
        tasks: &mut JoinSet<()>,
        kill: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(req) = self.caps_requests.next() => {
                    let caps = self.caps.borrow().clone();
                    hwsched_bus::micro::respond(&req, &caps).await;
                }
                Some(req) = self.drain_requests.next() => self.apply_drain(&req).await,
                Some(m) = self.cancels.next() => {
                    if let Ok(c) = hwsched_bus::decode::<CancelTask>(m.headers.as_ref(), &m.payload) {
                        if self.executor.cancel(&c) > 0 {
                            tracing::info!(task_id = %c.task_id, attempt = c.attempt, reason = %c.reason, "cancelling running task");
                        }
                    }
                }
                next = async { match self.assignments.as_mut() { Some(a) => a.next().await, None => std::future::pending().await } } => match next {
                    Some(Ok(msg)) => { tasks.spawn(self.executor.clone().handle(msg, kill.clone())); }
                    Some(Err(e)) => tracing::warn!(error = %e, "assignment stream error"),
                    None => anyhow::bail!("assignment consumer closed"),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }

    async fn apply_drain(&mut self, req: &async_nats::service::Request) {
        match hwsched_bus::decode::<DrainWorker>(req.message.headers.as_ref(), &req.message.payload) {
            Ok(d) => match self.drain.apply(&d, self.executor.running.task_ids()).await {
                Ok(reply) => {
                    self.state.send_replace(self.drain.state());
                    // announced before the reply, on the same connection: once
                    // `hwsched drain` returns, the scheduler has it ahead of any new task
                    announce(&self.bus, &self.last_heartbeat, self.drain.state()).await;
                    hwsched_bus::micro::respond(req, &reply).await;
                }
                Err(why) => hwsched_bus::micro::respond_error(req, 500, why).await,
            },
            Err(e) => hwsched_bus::micro::respond_error(req, hwsched_bus::micro::BAD_REQUEST, e.to_string()).await,
        }
    }

    /// Leaving: take no new work, say so, let running tasks finish within the grace.
    async fn leave(self, mut tasks: JoinSet<()>, kill: CancellationToken, telemetry: &Telemetry) {
        drop(self.assignments);
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "NATS service not stopped cleanly");
        }
        telemetry.set_ready(false);
        self.state.send_replace(WorkerState::Draining);
        if tasks.is_empty() {
            return;
        }
        tracing::info!(running = tasks.len(), grace_s = DRAIN_GRACE.as_secs(), "draining: waiting for running tasks");
        let drained = tokio::time::timeout(DRAIN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            kill.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// Sends the last heartbeat again with `state`.
async fn announce(bus: &Bus, last: &Mutex<Option<WorkerHeartbeat>>, state: WorkerState) {
    let hb = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(mut hb) = hb {
        hb.state = state as i32;
        hb.timestamp_ms = now_ms();
        if let Err(e) = bus.publish(bus.subjects().worker_heartbeat(&hb.worker_id), &hb).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}
