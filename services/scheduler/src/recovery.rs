//! Recovery on takeover: a scheduler that takes the lease resumes the
//! unfinished tasks its predecessor recorded, completes the parts of split
//! tasks, and sends recent assignments again in case they were never sent.

use anyhow::Context;
use async_nats::jetstream::kv;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams};
use hwsched_placement::group;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEventKind, TaskRecord, TaskState},
    Message,
};

use crate::{
    io::task_id,
    scheduler::{Scheduler, INTAKE_CONCURRENCY},
};

impl Scheduler {
    /// Resumes every non-terminal task recorded before a restart.
    pub(crate) async fn load_records(&mut self) -> anyhow::Result<()> {
        let keys = self.io.records.keys().await.context("list task records")?;
        let now = now_ms();
        let n = self.insert_open_records(keys, now).await?;
        self.resume_split_parts(now).await;
        self.settle_stored_results(now).await;
        self.publish_parent_updates().await;
        if n > 0 {
            tracing::info!(tasks = n, "resumed unfinished tasks");
        }
        self.resend_recent_assignments(now).await;
        Ok(())
    }

    /// Puts the tasks recorded under `keys` that are not finished into the
    /// state; returns how many.
    async fn insert_open_records(&mut self, mut keys: kv::Keys, now: i64) -> anyhow::Result<usize> {
        let mut n = 0;
        while let Some(key) = keys.next().await {
            let key = key.context("read task record key")?;
            let Some(bytes) = self.io.records.get(&key).await.context("read task record")? else {
                continue;
            };
            match TaskRecord::decode(bytes.as_ref()) {
                Ok(rec) if matches!(rec.state(), TaskState::Queued | TaskState::Assigned | TaskState::Split) => {
                    self.state.insert(rec, now);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(key, error = %e, "undecodable task record skipped"),
            }
        }
        Ok(n)
    }

    /// Split tasks whose parts were not all recorded, or ended unnoticed, before the restart.
    async fn resume_split_parts(&mut self, now: i64) {
        let split = self.state.records_in(TaskState::Split);
        for parent in split {
            let (live, ended) = match self.ensure_parts(&parent).await {
                Ok(parts) => parts,
                Err(e) => {
                    // the parts it could not read stay open; the others go on
                    tracing::error!(task_id = %task_id(&parent), error = %e, "parts of a split task not resumed");
                    continue;
                }
            };
            for p in live {
                self.state.insert(p, now);
            }
            for p in ended {
                self.state.settle_part(&p, None, now);
            }
        }
    }

    /// Running attempts whose result is already stored: the predecessor took the
    /// result, but its record of the outcome was not saved (the bucket was
    /// unavailable past the save's retries, or it died in between). Applied now, as
    /// if just received, so the attempt is neither waited on nor run again.
    async fn settle_stored_results(&mut self, now: i64) {
        let running: Vec<(String, u32, String)> = self
            .state
            .records_in(TaskState::Assigned)
            .into_iter()
            .flat_map(|r| {
                let id = task_id(&r);
                let copy = r.hedge.as_ref().map(|h| (id.clone(), h.attempt, h.worker_id.clone()));
                std::iter::once((id, r.attempt, r.worker_id)).chain(copy)
            })
            .collect();
        let bus = &self.io.bus;
        let found: Vec<ExecutionResult> = futures::stream::iter(running)
            .map(|(id, attempt, worker)| async move {
                match bus.stored_result(Some(&worker), &id).await {
                    Ok(res) => res.filter(|r| r.attempt == attempt && r.worker_id == worker),
                    Err(e) => {
                        tracing::warn!(task_id = id, error = %e, "stored result not read: the attempt is waited on");
                        None
                    }
                }
            })
            .buffer_unordered(INTAKE_CONCURRENCY)
            .filter_map(futures::future::ready)
            .collect()
            .await;
        for res in found {
            tracing::info!(task_id = %res.task_id, attempt = res.attempt, worker_id = %res.worker_id, "stored result of a running attempt applied: its record had not caught up");
            let c = self.state.complete(&res, now);
            self.conclude(&res, c).await;
        }
        self.stop_hedge_losers().await;
    }

    /// A scheduler that died between recording an assignment and sending it
    /// left a task no worker will ever hear of. Its successor sends every
    /// assignment recorded within the de-duplication window again under the
    /// same message id: JetStream drops the ones that were sent, the others
    /// reach their worker. (Older ones are caught by the assignment grace,
    /// except on observe-only workers, which do not list what they run.)
    async fn resend_recent_assignments(&self, now: i64) {
        let window = streams::TASK_DEDUP_WINDOW.as_millis() as i64 * 9 / 10;
        let recent: Vec<TaskRecord> = self
            .state
            .records_in(TaskState::Assigned)
            .into_iter()
            .filter(|r| now - r.assigned_at_ms < window)
            .collect();
        let resent = futures::stream::iter(recent)
            .map(|rec| async move { self.io.publish_assignment(&rec).await })
            .buffer_unordered(INTAKE_CONCURRENCY)
            .filter(|sent| futures::future::ready(*sent))
            .count()
            .await;
        if resent > 0 {
            tracing::info!(assignments = resent, "recent assignments sent again (duplicates dropped by JetStream)");
        }
    }

    /// The parts of a split task that are not running here: recorded now if
    /// they never were (returned to be queued), else read back (returned to be
    /// queued again, or as ended, to be settled in the parent).
    pub(crate) async fn ensure_parts(&self, parent: &TaskRecord) -> anyhow::Result<(Vec<TaskRecord>, Vec<TaskRecord>)> {
        let (_, fresh) = group::split(parent, now_ms());
        let (mut live, mut ended) = (Vec::new(), Vec::new());
        for (slot, part) in parent.parts.iter().zip(fresh) {
            if slot.state() != TaskState::Unspecified || self.state.knows(&slot.task_id) {
                continue;
            }
            let stored = match self.io.records.create(&slot.task_id, part.encode_to_vec().into()).await {
                Ok(_) => {
                    self.event(&part, TaskEventKind::Queued, "").await;
                    live.push(part);
                    continue;
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    self.io.records.get(&slot.task_id).await.context("read a part's record")?
                }
                Err(e) => return Err(e).context("record a part"),
            };
            match stored.map(|b| TaskRecord::decode(b.as_ref())) {
                Some(Ok(rec)) if matches!(rec.state(), TaskState::Queued | TaskState::Assigned) => live.push(rec),
                Some(Ok(rec)) => ended.push(rec),
                // stays open (its parent cannot finish; `explain` shows which part)
                _ => tracing::error!(task_id = %slot.task_id, "the record of a part is unreadable"),
            }
        }
        Ok((live, ended))
    }
}
