//! Sharded and replicated tasks. Such a task is split into parts: child tasks
//! (`<task_id>--s<i>` for shards, `<task_id>--r<i>` for replicas) that are
//! queued, placed, retried and lost like any task. The parent waits in state
//! SPLIT and records how each part ended; it ends when every part has:
//! succeeded if all did, cancelled if any was cancelled and none failed,
//! failed otherwise.

use hwsched_proto::v1::{ExecutionResult, PartResult, Placement, TaskRecord, TaskRequest, TaskState, TaskStatus};

/// Between a parent's id and a part's suffix; producers may not use it in ids.
pub const SEPARATOR: &str = "--";

/// The task a part id belongs to (`suite` for `suite--s2`); `None` for other ids.
pub fn parent_of(task_id: &str) -> Option<&str> {
    task_id.split_once(SEPARATOR).map(|(parent, _)| parent)
}

/// Whether `task` runs as parts: sharded with 2+ shards, or replicated.
pub fn is_split(task: &TaskRequest) -> bool {
    task.placement.as_ref().is_some_and(|p| match p.strategy.as_str() {
        "sharded" => p.shards >= 2,
        "replicated" => !p.hardware_classes.is_empty(),
        _ => false,
    })
}

/// The part ids of a task, in part order (empty unless [`is_split`]).
pub fn part_ids(task: &TaskRequest) -> Vec<String> {
    let Some(p) = task.placement.as_ref().filter(|_| is_split(task)) else { return Vec::new() };
    let (kind, n) = if p.strategy == "sharded" { ('s', p.shards as usize) } else { ('r', p.hardware_classes.len()) };
    (0..n).map(|i| format!("{}{SEPARATOR}{kind}{i}", task.task_id)).collect()
}

/// Splits a newly accepted task: the parent (state SPLIT, one empty
/// [`PartResult`] per part) and its parts, queued. Each part is the parent's
/// task with its own id and a single placement; a shard carries its index and
/// the total, a replica requires its hardware class.
pub fn split(parent: &TaskRecord, now_ms: i64) -> (TaskRecord, Vec<TaskRecord>) {
    let task = parent.task.clone().unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let ids = part_ids(&task);
    let total = ids.len() as u32;
    let mut parts = Vec::with_capacity(ids.len());
    let mut results = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let mut t = TaskRequest {
            task_id: id.clone(),
            placement: Some(Placement { strategy: "single".into(), ..Default::default() }),
            ..task.clone()
        };
        let class = placement.hardware_classes.get(i).cloned().unwrap_or_default();
        let (shard_index, shard_total) = if class.is_empty() { (i as u32, total) } else { (0, 0) };
        if class.is_empty() {
            // a shard runs its own slice: its own workload for the learner
            let label = format!("shard {}/{total}", i + 1);
            t.name = if task.name.is_empty() { label } else { format!("{} [{label}]", task.name) };
        } else {
            // replicas keep the name: the same workload, learned on each class
            t.requirements.get_or_insert_with(Default::default).hardware_classes = vec![class.clone()];
        }
        parts.push(TaskRecord {
            schema_version: parent.schema_version,
            task: Some(t),
            state: TaskState::Queued as i32,
            queued_at_ms: parent.queued_at_ms,
            updated_at_ms: now_ms,
            traceparent: parent.traceparent.clone(),
            parent_id: task.task_id.clone(),
            shard_index,
            shard_total,
            ..Default::default()
        });
        results.push(PartResult { task_id: id, index: i as u32, hardware_class: class, ..Default::default() });
    }
    let kind = if placement.strategy == "sharded" { "shard(s)" } else { "replica(s)" };
    let parent = TaskRecord {
        state: TaskState::Split as i32,
        reason: format!("running as {total} {kind}"),
        updated_at_ms: now_ms,
        parts: results,
        ..parent.clone()
    };
    (parent, parts)
}

/// Records in `parent` how `part` ended (`res`: its last result, when there
/// was one). Returns true when that was the last part: the parent is then
/// terminal. A part that is not terminal, or not of this parent, changes nothing.
pub fn settle(parent: &mut TaskRecord, part: &TaskRecord, res: Option<&ExecutionResult>, now_ms: i64) -> bool {
    let state = part.state();
    if !matches!(state, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Rejected) {
        return false;
    }
    let id = part.task.as_ref().map_or("", |t| t.task_id.as_str());
    let Some(slot) = parent.parts.iter_mut().find(|p| p.task_id == id) else { return false };
    slot.state = state as i32;
    slot.status = match (res, state) {
        (Some(r), _) => r.status,
        (None, TaskState::Succeeded) => TaskStatus::Succeeded as i32,
        (None, TaskState::Cancelled) => TaskStatus::Cancelled as i32,
        (None, _) => TaskStatus::Error as i32,
    };
    slot.worker_id = res.map_or_else(|| part.worker_id.clone(), |r| r.worker_id.clone());
    slot.exit_code = res.map_or(-1, |r| r.exit_code);
    slot.duration_s = res.map_or(0.0, |r| r.duration_s);
    slot.attempts = part.attempt;
    slot.reason = part.reason.clone();
    parent.updated_at_ms = now_ms;
    let ended = |s: TaskState| parent.parts.iter().filter(|p| p.state() == s).count();
    let (ok, cancelled, total) = (ended(TaskState::Succeeded), ended(TaskState::Cancelled), parent.parts.len());
    let open = parent.parts.iter().filter(|p| p.state() == TaskState::Unspecified).count();
    let kind = if parent.parts.iter().any(|p| !p.hardware_class.is_empty()) { "replicas" } else { "shards" };
    if open > 0 {
        parent.reason = format!("{} of {total} {kind} ended, {ok} succeeded", total - open);
        return false;
    }
    let bad = total - ok - cancelled;
    parent.state = if ok == total {
        TaskState::Succeeded
    } else if bad == 0 {
        TaskState::Cancelled
    } else {
        TaskState::Failed
    } as i32;
    parent.reason =
        match parent.parts.iter().find(|p| !matches!(p.state(), TaskState::Succeeded | TaskState::Cancelled)) {
            None => format!("{ok} of {total} {kind} succeeded"),
            Some(p) => format!("{ok} of {total} {kind} succeeded; {}: {}", p.task_id, p.reason),
        };
    true
}

/// The outcome of a finished split task, for its producer: the parts' worst
/// status (failed over cancelled over succeeded), the first failed part's exit
/// code, the longest part's duration (they run side by side) and every worker used.
pub fn summary(parent: &TaskRecord) -> (TaskStatus, i32, f64, String) {
    let status = match parent.state() {
        TaskState::Succeeded => TaskStatus::Succeeded,
        TaskState::Cancelled => TaskStatus::Cancelled,
        _ => TaskStatus::Failed,
    };
    let exit = parent
        .parts
        .iter()
        .find(|p| !matches!(p.state(), TaskState::Succeeded | TaskState::Cancelled))
        .map_or(0, |p| p.exit_code);
    let longest = parent.parts.iter().map(|p| p.duration_s).fold(0.0, f64::max);
    let mut workers: Vec<&str> = parent.parts.iter().map(|p| p.worker_id.as_str()).filter(|w| !w.is_empty()).collect();
    workers.sort_unstable();
    workers.dedup();
    (status, exit, longest, workers.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(strategy: &str, shards: u32, classes: &[&str]) -> TaskRecord {
        TaskRecord {
            task: Some(TaskRequest {
                task_id: "suite".into(),
                name: "unit tests".into(),
                command: vec!["pytest".into()],
                placement: Some(Placement {
                    strategy: strategy.into(),
                    shards,
                    hardware_classes: classes.iter().map(|c| c.to_string()).collect(),
                }),
                ..Default::default()
            }),
            state: TaskState::Queued as i32,
            queued_at_ms: 5,
            reply_to: "_INBOX.x".into(),
            ..Default::default()
        }
    }

    fn ended(part: &TaskRecord, state: TaskState, worker: &str) -> TaskRecord {
        TaskRecord { state: state as i32, worker_id: worker.into(), attempt: 1, ..part.clone() }
    }

    #[test]
    fn part_ids_name_their_parent() {
        assert_eq!(parent_of("suite--s2"), Some("suite"));
        assert_eq!(parent_of("suite--r0"), Some("suite"));
        assert_eq!(parent_of("plain-task"), None);
    }

    #[test]
    fn only_sharded_and_replicated_tasks_split() {
        assert!(is_split(parent("sharded", 3, &[]).task.as_ref().expect("task")));
        assert!(is_split(parent("replicated", 0, &["cpu"]).task.as_ref().expect("task")));
        assert!(!is_split(parent("sharded", 1, &[]).task.as_ref().expect("task")));
        assert!(!is_split(parent("gang", 0, &[]).task.as_ref().expect("task")));
        assert!(!is_split(&TaskRequest::default()));
    }

    #[test]
    fn shards_carry_their_index_and_the_total() {
        let (p, parts) = split(&parent("sharded", 3, &[]), 9);
        assert_eq!(p.state(), TaskState::Split);
        assert_eq!(p.parts.len(), 3);
        let ids: Vec<&str> = parts.iter().map(|r| r.task.as_ref().expect("task").task_id.as_str()).collect();
        assert_eq!(ids, ["suite--s0", "suite--s1", "suite--s2"]);
        for (i, r) in parts.iter().enumerate() {
            assert_eq!((r.shard_index, r.shard_total), (i as u32, 3));
            assert_eq!(r.state(), TaskState::Queued);
            assert_eq!(r.parent_id, "suite");
            assert_eq!(r.queued_at_ms, 5);
            // the producer hears from the parent only
            assert!(r.reply_to.is_empty());
            let t = r.task.as_ref().expect("task");
            assert!(!is_split(t), "a part is a single task");
            assert_eq!(t.name, format!("unit tests [shard {}/3]", i + 1));
            assert_eq!(t.command, ["pytest"]);
        }
    }

    #[test]
    fn replicas_require_their_hardware_class() {
        let (p, parts) = split(&parent("replicated", 0, &["cpu", "gpu:nvidia-h100"]), 9);
        assert_eq!(p.parts.iter().map(|r| r.hardware_class.as_str()).collect::<Vec<_>>(), ["cpu", "gpu:nvidia-h100"]);
        let classes: Vec<Vec<String>> = parts
            .iter()
            .map(|r| {
                r.task.as_ref().expect("task").requirements.as_ref().expect("requirements").hardware_classes.clone()
            })
            .collect();
        assert_eq!(classes, [vec!["cpu".to_string()], vec!["gpu:nvidia-h100".to_string()]]);
        assert_eq!(parts[1].task.as_ref().expect("task").task_id, "suite--r1");
        assert_eq!(parts[1].task.as_ref().expect("task").name, "unit tests", "one workload, compared across classes");
        assert_eq!((parts[1].shard_index, parts[1].shard_total), (0, 0));
    }

    #[test]
    fn the_parent_ends_when_every_part_has() {
        let (mut p, parts) = split(&parent("sharded", 2, &[]), 0);
        let res = ExecutionResult {
            worker_id: "w1".into(),
            status: TaskStatus::Succeeded as i32,
            duration_s: 4.0,
            exit_code: 0,
            ..Default::default()
        };
        assert!(!settle(&mut p, &ended(&parts[0], TaskState::Succeeded, "w1"), Some(&res), 10));
        assert_eq!(p.state(), TaskState::Split);
        assert_eq!(p.reason, "1 of 2 shards ended, 1 succeeded");
        // a part still running changes nothing
        assert!(!settle(&mut p, &parts[1], None, 11));
        let failed = ExecutionResult {
            worker_id: "w2".into(),
            status: TaskStatus::Failed as i32,
            duration_s: 7.5,
            exit_code: 3,
            ..Default::default()
        };
        let mut last = ended(&parts[1], TaskState::Failed, "w2");
        last.reason = "attempt 3 on w2 ended TASK_STATUS_FAILED".into();
        assert!(settle(&mut p, &last, Some(&failed), 12));
        assert_eq!(p.state(), TaskState::Failed);
        assert_eq!(p.reason, "1 of 2 shards succeeded; suite--s1: attempt 3 on w2 ended TASK_STATUS_FAILED");
        assert_eq!(summary(&p), (TaskStatus::Failed, 3, 7.5, "w1,w2".into()));
    }

    #[test]
    fn all_parts_succeeding_or_cancelled_decide_the_parent() {
        let (mut p, parts) = split(&parent("replicated", 0, &["cpu", "accel:npu"]), 0);
        settle(&mut p, &ended(&parts[0], TaskState::Succeeded, "a"), None, 1);
        settle(&mut p, &ended(&parts[1], TaskState::Succeeded, "b"), None, 2);
        assert_eq!(p.state(), TaskState::Succeeded);
        assert_eq!(p.reason, "2 of 2 replicas succeeded");
        assert_eq!(summary(&p).0, TaskStatus::Succeeded);

        let (mut p, parts) = split(&parent("sharded", 2, &[]), 0);
        settle(&mut p, &ended(&parts[0], TaskState::Succeeded, "a"), None, 1);
        settle(&mut p, &ended(&parts[1], TaskState::Cancelled, ""), None, 2);
        assert_eq!(p.state(), TaskState::Cancelled);

        // a replica that fits no worker fails its parent
        let (mut p, parts) = split(&parent("replicated", 0, &["cpu", "accel:tpu"]), 0);
        settle(&mut p, &ended(&parts[0], TaskState::Succeeded, "a"), None, 1);
        settle(&mut p, &ended(&parts[1], TaskState::Rejected, ""), None, 2);
        assert_eq!(p.state(), TaskState::Failed);
    }
}
