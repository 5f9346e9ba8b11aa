//! The control endpoints of the `hwsched-scheduler` service: queue, explain,
//! tasks, cancel and quarantine.

use async_nats::service;
use hwsched_bus::{micro, now_ms};
use hwsched_proto::{
    v1::{
        CancelReply, CancelTask, ExplainReply, ExplainRequest, QuarantineReply, QuarantineRequest, QuarantinedWorker,
        QueueReply, TaskEventKind, TaskRecord, TaskState, TasksReply, TasksRequest,
    },
    Message,
};

use crate::{io::task_id, scheduler::Scheduler};

impl Scheduler {
    /// `hws.control.queue`: the waiting tasks, in the order they would be placed.
    pub(crate) async fn on_queue(&self, r: service::Request) {
        micro::respond(&r, &QueueReply { tasks: self.state.queue_view(now_ms()) }).await;
    }

    /// `hws.control.explain`: the live record when the task is not finished, else the stored one.
    pub(crate) async fn on_explain(&self, r: service::Request) {
        let req = match hwsched_bus::decode::<ExplainRequest>(r.message.headers.as_ref(), &r.message.payload) {
            Ok(req) => req,
            Err(e) => return micro::respond_error(&r, micro::BAD_REQUEST, e.to_string()).await,
        };
        let record = match self.state.record(&req.task_id) {
            Some(r) => Some(r),
            None => match self.io.records.get(&req.task_id).await {
                Ok(Some(b)) => TaskRecord::decode(b.as_ref()).ok(),
                _ => None,
            },
        };
        micro::respond(&r, &ExplainReply { found: record.is_some(), record }).await;
    }

    /// `hws.control.tasks`: the live tasks (waiting or placed), newest first.
    pub(crate) async fn on_tasks(&self, r: service::Request) {
        let req = match hwsched_bus::decode::<TasksRequest>(r.message.headers.as_ref(), &r.message.payload) {
            Ok(req) => req,
            Err(e) => return micro::respond_error(&r, micro::BAD_REQUEST, e.to_string()).await,
        };
        let now = now_ms();
        let mut tasks = match req.state() {
            TaskState::Unspecified => {
                let mut all = self.state.queue_view(now);
                all.extend(self.state.records_in(TaskState::Assigned));
                all.extend(self.state.records_in(TaskState::Split));
                all
            }
            TaskState::Queued => self.state.queue_view(now),
            st => self.state.records_in(st),
        };
        tasks.sort_by(|a, b| b.queued_at_ms.cmp(&a.queued_at_ms).then_with(|| task_id(a).cmp(&task_id(b))));
        let total = tasks.len() as u32;
        tasks.truncate(if req.limit == 0 { 1000 } else { req.limit as usize });
        micro::respond(&r, &TasksReply { tasks, total }).await;
    }

    /// `hws.control.cancel`: removes the task (or its parts) from the queue, or
    /// stops its running attempts.
    pub(crate) async fn on_cancel(&mut self, r: service::Request) {
        self.settle_sends().await;
        let c = match hwsched_bus::decode::<CancelTask>(r.message.headers.as_ref(), &r.message.payload) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable cancel request");
                return micro::respond_error(&r, micro::BAD_REQUEST, e.to_string()).await;
            }
        };
        if c.attempt != 0 {
            // stops one copy of a hedged task: for its monitor, not a cancel of the task
            let detail = "a stop of one attempt is for its monitor; the task is not cancelled".into();
            return micro::respond(&r, &CancelReply { task_id: c.task_id, found: false, detail }).await;
        }
        let found = self.state.knows(&c.task_id);
        let cancelled = self.state.cancel(&c.task_id, now_ms(), &c.reason);
        let mut details = Vec::new();
        for rec in &cancelled {
            // Recorded first: a monitor that has not started it yet will see it is no longer current.
            self.save(rec).await;
            let detail = if rec.worker_id.is_empty() {
                "removed from the queue".to_string()
            } else {
                format!("stopping attempt {} on {}", rec.attempt, rec.worker_id)
            };
            tracing::info!(task_id = %task_id(rec), detail, "task cancelled");
            self.event(rec, TaskEventKind::Cancelled, &rec.reason).await;
            self.reply_finished(rec, None).await;
            details.push(if rec.parent_id.is_empty() { detail } else { format!("{}: {detail}", task_id(rec)) });
        }
        self.publish_parent_updates().await;
        let reply = if found {
            CancelReply { task_id: c.task_id, found: true, detail: details.join("; ") }
        } else {
            CancelReply { task_id: c.task_id, found: false, detail: "unknown or already finished".into() }
        };
        micro::respond(&r, &reply).await;
    }

    /// `hws.control.quarantine`: the quarantined workers and the breaker; releases one when asked.
    pub(crate) async fn on_quarantine(&mut self, r: service::Request) {
        let req = match hwsched_bus::decode::<QuarantineRequest>(r.message.headers.as_ref(), &r.message.payload) {
            Ok(req) => req,
            Err(e) => return micro::respond_error(&r, micro::BAD_REQUEST, e.to_string()).await,
        };
        let released = !req.release.is_empty() && self.state.release_worker(&req.release);
        if released {
            tracing::warn!(worker_id = %req.release, "worker released from quarantine by an operator");
        }
        self.health_events().await;
        let needed = self.state.quarantine.probe_passes;
        let workers = self
            .state
            .quarantined()
            .into_iter()
            .map(|(id, q)| QuarantinedWorker {
                worker_id: id.clone(),
                hardware_class: self.class_of(id),
                since_ms: q.since_ms,
                reason: q.reason.clone(),
                probes_passed: q.probes_passed,
                probes_needed: needed,
                probing: q.probe.is_some(),
                evidence_from_ms: q.since_ms - self.state.quarantine.window_ms,
            })
            .collect();
        let b = self.state.breaker();
        let reply = QuarantineReply {
            workers,
            breaker_open: b.is_some(),
            breaker_reason: b.map(|b| b.reason.clone()).unwrap_or_default(),
            breaker_since_ms: b.map_or(0, |b| b.since_ms),
            suspects: b.map(|b| b.suspects.iter().cloned().collect()).unwrap_or_default(),
            released,
        };
        micro::respond(&r, &reply).await;
    }
}
