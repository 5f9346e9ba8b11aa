//! Fixtures shared by the state's unit tests.

use hwsched_proto::v1::{
    CpuInfo, ExecutionResult, Placement, TaskRecord, TaskRequest, TaskState, TaskStatus, WorkerCapabilities,
    WorkerHeartbeat,
};

use crate::state::{Action, State};

/// A registered worker's capabilities (16 GB, revision 7).
pub(super) fn caps(id: &str, cores: u32, slots: u32) -> WorkerCapabilities {
    WorkerCapabilities {
        worker_id: id.into(),
        cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
        memory_mb: 16384,
        slots,
        revision: 7,
        ..Default::default()
    }
}

/// [`caps`] of an 8-core worker of a hardware class.
pub(super) fn with_class(id: &str, hw: &str, slots: u32) -> WorkerCapabilities {
    WorkerCapabilities { hardware_class: hw.into(), ..caps(id, 8, slots) }
}

/// A queued task record.
pub(super) fn queued(id: &str, prio: u32, at: i64) -> TaskRecord {
    TaskRecord {
        task: Some(TaskRequest {
            task_id: id.into(),
            command: vec!["true".into()],
            priority: prio,
            ..Default::default()
        }),
        state: TaskState::Queued as i32,
        queued_at_ms: at,
        ..Default::default()
    }
}

/// [`queued`] at priority 3 with a task name (the model's workload).
pub(super) fn named(id: &str, name: &str, at: i64) -> TaskRecord {
    let mut r = queued(id, 3, at);
    if let Some(t) = r.task.as_mut() {
        t.name = name.into();
    }
    r
}

/// The result of a record's current attempt.
pub(super) fn result(rec: &TaskRecord, status: TaskStatus) -> ExecutionResult {
    ExecutionResult {
        task_id: rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
        attempt: rec.attempt,
        worker_id: rec.worker_id.clone(),
        status: status as i32,
        ..Default::default()
    }
}

/// (task id, worker id) of each assignment among `actions`.
pub(super) fn assigned(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign(r) => {
                Some((r.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(), r.worker_id.clone()))
            }
            Action::Reject(_) | Action::Hedge(_) => None,
        })
        .collect()
}

/// (task id, copy's worker) of each hedged copy among `actions`.
pub(super) fn hedged(actions: &[Action]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Hedge(r) => Some((
                r.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
                r.hedge.as_ref().map(|h| h.worker_id.clone()).unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

/// An active worker's heartbeat (revision 7).
pub(super) fn hb(worker: &str, temp: f64, throttling: bool) -> WorkerHeartbeat {
    WorkerHeartbeat {
        worker_id: worker.into(),
        state: 1,
        capabilities_revision: 7,
        max_temp_c: temp,
        throttling,
        ..Default::default()
    }
}

/// A model that saw each (task name, hardware class, seconds) succeed once.
pub(super) fn trained(pairs: &[(&str, &str, f64)]) -> hwsched_model::Model {
    let mut m = hwsched_model::Model::default();
    for (name, hw, secs) in pairs {
        m.observe(&ExecutionResult {
            name: (*name).into(),
            hardware_class: (*hw).into(),
            duration_s: *secs,
            status: TaskStatus::Succeeded as i32,
            ..Default::default()
        });
    }
    m
}

/// Splits a task with `placement` and queues its parts.
pub(super) fn insert_split(s: &mut State, id: &str, placement: Placement) {
    let mut parent = queued(id, 3, 0);
    parent.task.as_mut().expect("task").placement = Some(placement);
    let (parent, parts) = crate::group::split(&parent, 0);
    s.insert(parent, 0);
    for p in parts {
        s.insert(p, 0);
    }
}
