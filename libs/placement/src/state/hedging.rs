//! Hedged copies of stragglers ([`State::hedges`], rules in `crate::hedge`),
//! and how one copy's end settles its task: the first to succeed wins and the
//! other is cancelled; a copy that fails or is lost leaves the other running
//! as the current attempt.

use hwsched_proto::v1::{CancelTask, ExecutionResult, FailureCategory, TaskRecord, TaskState};

use crate::{
    fit::Outcome,
    hedge::{copy_view, hedge_of, p95_s, swap_copies},
    state::{
        health::is_probe,
        outcome::{attempt_entry, push_entry},
        records::{concurrency_key, runtime_estimate, Held, NO_TASK},
        Completion, State, WorkerState,
    },
    view::WorkerView,
};

/// Stragglers are looked for at most this often, ms (each look decodes the
/// records of the attempts that have run past the minimum).
pub(super) const SCAN_EVERY_MS: i64 = 1_000;

/// What hedging keeps between passes.
#[derive(Debug, Default)]
pub(super) struct Hedging {
    /// Hedged copies made.
    pub(super) made: u64,
    /// When stragglers were last looked for.
    scanned_ms: i64,
    /// Losing copies to stop, for [`State::take_hedge_cancels`].
    cancels: Vec<CancelTask>,
}

impl State {
    /// Hedged copies for attempts that straggle, each on a worker with room
    /// now that can run its task (other hardware first, never a worker that
    /// refused it), within the policy's share of placements and one per task.
    /// Each returned record carries its copy in `hedge`; it is reserved here.
    pub(super) fn hedges(&mut self, now_ms: i64) -> Vec<TaskRecord> {
        let policy = self.hedge.clone();
        if !policy.within_budget(self.hedging.made, self.placements) || now_ms - self.hedging.scanned_ms < SCAN_EVERY_MS
        {
            return Vec::new();
        }
        self.hedging.scanned_ms = now_ms;
        let long: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, h)| h.state == TaskState::Assigned && h.hedge.is_none())
            .filter(|(_, h)| now_ms - h.assigned_at_ms >= policy.min_after_ms)
            .map(|(id, _)| id.clone())
            .collect();
        let model = self.model.take();
        let mut out = Vec::new();
        for id in long {
            if !policy.within_budget(self.hedging.made, self.placements) {
                break;
            }
            let Some(mut rec) = self.tasks.get(&id).map(Held::unpack) else { continue };
            // a copy must not break a concurrency limit; one copy per task; probes judge their worker
            if rec.hedges > 0 || is_probe(&rec) || concurrency_key(&rec).is_some() {
                continue;
            }
            let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
            let class = self.workers.get(&rec.worker_id).and_then(|w| w.caps.as_ref()).map(|c| &c.hardware_class);
            let p95 = model
                .as_ref()
                .zip(class)
                .and_then(|(m, c)| m.entry(&hwsched_model::task_workload_key(task), c))
                .and_then(p95_s);
            let expected =
                (rec.predicted_runtime_s > 0.0 || task.expected_duration_s > 0.0).then(|| runtime_estimate(&rec));
            let ran_s = (now_ms - rec.assigned_at_ms) as f64 / 1000.0;
            let Some(after_s) = policy.straggles_after_s(p95, expected).filter(|a| ran_s >= *a) else { continue };
            let views = self.free_views(&rec, now_ms);
            // placed as a retry would be: elsewhere, other hardware first
            let mut elsewhere = rec.clone();
            elsewhere.tried_workers.push(rec.worker_id.clone());
            let Outcome::Place { worker_id, gpus, predicted_runtime_s, .. } =
                self.decide(&elsewhere, &views, model.as_ref())
            else {
                continue;
            };
            let basis = match p95 {
                Some(p) => format!("its p95 of {p:.1} s"),
                None => format!("its expected {:.1} s", expected.unwrap_or_default()),
            };
            let why = format!(
                "attempt {} on {} ran {ran_s:.0} s, past {after_s:.1} s ({} x {basis}); a copy runs on {worker_id}",
                rec.attempt, rec.worker_id, policy.factor
            );
            let hedge = hedge_of(&rec, worker_id, gpus, predicted_runtime_s.unwrap_or(0.0), now_ms, why);
            rec.hedge = Some(hedge);
            rec.hedges += 1;
            rec.updated_at_ms = now_ms;
            self.hedging.made += 1;
            if let Some(copy) = copy_view(&rec) {
                self.occupy(&copy, now_ms);
            }
            self.tasks.insert(id, Held::pack(&rec));
            out.push(rec);
        }
        self.model = model;
        out
    }

    /// The live workers outside quarantine with room now, other than the one
    /// `rec`'s attempt runs on.
    fn free_views(&self, rec: &TaskRecord, now_ms: i64) -> Vec<WorkerView> {
        self.workers
            .iter()
            .filter(|(id, w)| **id != rec.worker_id && w.state != WorkerState::Offline && !self.is_quarantined(id))
            .filter_map(|(_, w)| w.view(now_ms))
            .filter(WorkerView::has_room)
            .collect()
    }

    /// Undoes a hedged copy whose assignment could not be sent: its
    /// reservation is freed, the task goes on with its current attempt (and
    /// is not hedged again).
    pub fn unhedge(&mut self, task_id: &str, now_ms: i64) {
        let Some(mut rec) = self.tasks.get(task_id).map(Held::unpack) else { return };
        let Some(copy) = copy_view(&rec) else { return };
        self.vacate(&copy);
        self.seen_hedge.remove(task_id);
        rec.hedge = None;
        rec.updated_at_ms = now_ms;
        self.tasks.insert(task_id.to_string(), Held::pack(&rec));
    }

    /// The losing copies to stop (one `CancelTask` naming its attempt and
    /// worker each) since the last call.
    pub fn take_hedge_cancels(&mut self) -> Vec<CancelTask> {
        std::mem::take(&mut self.hedging.cancels)
    }

    /// The current attempt of released `rec` succeeded (or ended the task):
    /// its hedged twin is recorded superseded and is to be stopped.
    pub(super) fn cancel_twin(&mut self, rec: &mut TaskRecord, now_ms: i64) {
        let Some(twin) = copy_view(rec) else { return };
        let why = format!("attempt {} on {} ended first", rec.attempt, rec.worker_id);
        let task_id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
        self.hedging.cancels.push(CancelTask {
            task_id,
            reason: format!("hedged copy no longer needed: {why}"),
            attempt: twin.attempt,
            worker_id: twin.worker_id.clone(),
        });
        let entry = attempt_entry(&twin, None, FailureCategory::Superseded, now_ms, &format!("superseded: {why}"));
        push_entry(rec, entry);
        rec.hedge = None;
    }

    /// The current attempt of released `rec` ended without success (`why`)
    /// while its hedged twin runs: recorded in the history, and the twin goes
    /// on as the current attempt. Spends nothing of the task's retry budget:
    /// the task has not stopped running.
    pub(super) fn copy_failed(
        &mut self,
        mut rec: TaskRecord,
        res: Option<&ExecutionResult>,
        category: FailureCategory,
        now_ms: i64,
        why: String,
    ) -> Completion {
        swap_copies(&mut rec);
        let ended = copy_view(&rec).unwrap_or_default();
        let decision = format!("its hedged twin, attempt {} on {}, goes on", rec.attempt, rec.worker_id);
        push_entry(&mut rec, attempt_entry(&ended, res, category, now_ms, &decision));
        if !rec.tried_workers.contains(&ended.worker_id) {
            rec.tried_workers.push(ended.worker_id.clone());
        }
        rec.hedge = None;
        rec.state = TaskState::Assigned as i32;
        rec.reason = format!("{why}; {decision}");
        rec.updated_at_ms = now_ms;
        self.insert(rec.clone(), now_ms);
        // (when the twin was last seen running went with the release: from now,
        // it is missed after the assignment grace at the latest)
        if let Some(id) = rec.task.as_ref().map(|t| t.task_id.clone()) {
            self.seen_running.insert(id, now_ms);
        }
        Completion::Continues(rec)
    }
}

#[cfg(test)]
#[path = "hedging_tests.rs"]
mod tests;
