//! Golden tests of the tables: each render of a fixed input is compared with
//! `golden/<name>.txt`. `UPDATE_GOLDEN=1 cargo test -p hwsched golden` rewrites
//! the files; review the diff before committing it.

use std::path::PathBuf;

use hwsched_client::{Attempt, Finished};
use hwsched_proto::v1::{
    AttemptRecord, CandidateScore, PartResult, ResourceUsage, TaskRequest, WorkerCapabilities, WorkerHeartbeat,
};

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/render/golden").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn worker(id: &str, class: Option<&str>, hb: WorkerHeartbeat) -> WorkerView {
    WorkerView {
        heartbeat: WorkerHeartbeat { worker_id: id.into(), ..hb },
        capabilities: class.map(|c| WorkerCapabilities {
            worker_id: id.into(),
            hardware_class: c.into(),
            ..Default::default()
        }),
        drain: None,
    }
}

fn record(id: &str, state: TaskState, queued_s_ago: i64) -> TaskRecord {
    TaskRecord {
        task: Some(TaskRequest { task_id: id.into(), name: format!("pytest tests/{id}.py"), ..Default::default() }),
        state: state as i32,
        queued_at_ms: NOW - queued_s_ago * 1000,
        ..Default::default()
    }
}

#[test]
fn golden_workers() {
    let gpu = worker(
        "gpu-node-7",
        Some("gpu:nvidia-h100-80gb-hbm3"),
        WorkerHeartbeat {
            state: WorkerState::Active as i32,
            slots_total: 8,
            slots_used: 3,
            cpu_util_pct: 41.25,
            memory_used_pct: 63.0,
            gpu_util_pct: 87.5,
            gpus: 8,
            max_temp_c: 71.0,
            throttling: true,
            ..Default::default()
        },
    );
    let mut drained = worker(
        "cpu-box-1",
        Some("cpu:x86_64-amd-epyc"),
        WorkerHeartbeat { state: WorkerState::Draining as i32, slots_total: 2, slots_used: 1, ..Default::default() },
    );
    drained.drain = Some(DrainReply { draining: true, reason: "kernel upgrade".into(), ..Default::default() });
    let phone = worker(
        "pixel-8",
        None,
        WorkerHeartbeat { state: WorkerState::Active as i32, slots_total: 1, observe_only: true, ..Default::default() },
    );
    // 6 slots on 2 cores, saturated by its own tests: busy, not overloaded
    let mut small = worker(
        "ci-small",
        Some("cpu:x86_64-intel-xeon"),
        WorkerHeartbeat {
            state: WorkerState::Active as i32,
            slots_total: 6,
            slots_used: 6,
            cpu_util_pct: 99.0,
            tasks_cpu_util_pct: 90.0,
            ..Default::default()
        },
    );
    if let Some(c) = small.capabilities.as_mut() {
        c.cpu = Some(hwsched_proto::v1::CpuInfo { logical_cores: 2, ..Default::default() });
    }
    // the same load from another tenant
    let shared = worker(
        "shared-box",
        Some("cpu:x86_64-intel-xeon"),
        WorkerHeartbeat { state: WorkerState::Active as i32, slots_total: 2, cpu_util_pct: 99.0, ..Default::default() },
    );
    golden("workers", &workers(&[gpu, drained, phone, small, shared]));
    golden("workers_empty", &workers(&[]));
}

#[test]
fn golden_queue_and_tasks() {
    let mut waiting = record("t-wait", TaskState::Queued, 95);
    waiting.reason = "no free slot: 2 worker(s) busy".into();
    if let Some(t) = waiting.task.as_mut() {
        t.priority = 1;
    }
    let quick = record("t-new", TaskState::Queued, 3);
    golden("queue", &queue(&[waiting.clone(), quick.clone()], NOW));
    golden("queue_empty", &queue(&[], NOW));

    let mut running = record("t-run", TaskState::Assigned, 400);
    running.worker_id = "gpu-node-7".into();
    running.attempt = 2;
    running.assigned_at_ms = NOW - 61_000;
    golden("tasks", &tasks(&[quick, running, waiting], 5, NOW));
    golden("tasks_empty", &tasks(&[], 0, NOW));
}

#[test]
fn golden_explain() {
    let mut rec = record("t-run", TaskState::Assigned, 12);
    rec.worker_id = "gpu-node-7".into();
    rec.attempt = 3;
    rec.failures = 1;
    rec.losses = 1;
    rec.gpu_indices = vec![0, 3];
    rec.history = vec![
        AttemptRecord {
            attempt: 1,
            worker_id: "gpu-node-2".into(),
            hardware_class: "gpu:nvidia-a100".into(),
            category: FailureCategory::OutOfMemory as i32,
            status: TaskStatus::Failed as i32,
            duration_s: 12.5,
            memory_mb: 4096,
            memory_peak_mb: 4096,
            decision: "retry with 6144 MB".into(),
            ..Default::default()
        },
        AttemptRecord {
            attempt: 2,
            worker_id: "gpu-node-9".into(),
            category: FailureCategory::WorkerLost as i32,
            memory_mb: 6144,
            decision: "retry elsewhere".into(),
            ..Default::default()
        },
    ];
    rec.predicted_runtime_s = 42.0;
    rec.hedge = Some(hwsched_proto::v1::HedgeAttempt {
        attempt: 4,
        worker_id: "gpu-node-3".into(),
        gpu_indices: vec![1],
        reason: "attempt 3 on gpu-node-7 ran 70 s, past 63.0 s (1.5 x its expected 42.0 s); a copy runs on gpu-node-3"
            .into(),
        ..Default::default()
    });
    rec.reason = "cost 0.210".into();
    rec.policy = "hwsched".into();
    rec.candidates_total = 7;
    rec.candidates = vec![
        CandidateScore {
            worker_id: "gpu-node-7".into(),
            hardware_class: "gpu:nvidia-h100".into(),
            cost: 0.21,
            wait_s: 0.0,
            completion_s: 42.0,
            predicted_runtime_s: 42.0,
            components: [("completion".to_string(), 0.3), ("load".to_string(), 0.1)].into(),
        },
        CandidateScore {
            worker_id: "gpu-node-2".into(),
            hardware_class: "gpu:nvidia-a100".into(),
            cost: 0.5,
            wait_s: 30.0,
            completion_s: 120.0,
            predicted_runtime_s: 0.0,
            components: [("completion".to_string(), 0.8)].into(),
        },
    ];
    golden("explain", &explain(&rec, NOW));
}

#[test]
fn golden_submit_lines_and_progress() {
    let result = ExecutionResult {
        task_id: "t-1".into(),
        worker_id: "vm".into(),
        duration_s: 1.712,
        exit_code: 0,
        resources: Some(ResourceUsage { memory_peak_mb: 313, ..Default::default() }),
        ..Default::default()
    };
    let ok = Update::Finished(Box::new(Finished {
        task_id: "t-1".into(),
        status: TaskStatus::Succeeded,
        worker_id: "vm".into(),
        exit_code: 0,
        duration_s: 1.712,
        attempts: 1,
        reasons: vec![],
        result: Some(result),
        parts: vec![],
    }));
    let split = Update::Finished(Box::new(Finished {
        task_id: "t-2".into(),
        status: TaskStatus::Failed,
        worker_id: "vm,vm2".into(),
        exit_code: 1,
        duration_s: 2.0,
        attempts: 2,
        reasons: vec!["1 of 2 shards failed".into()],
        result: None,
        parts: vec![
            PartResult {
                task_id: "t-2--s0".into(),
                state: TaskState::Succeeded as i32,
                worker_id: "vm".into(),
                duration_s: 0.5,
                ..Default::default()
            },
            PartResult {
                task_id: "t-2--s1".into(),
                state: TaskState::Failed as i32,
                worker_id: "vm2".into(),
                duration_s: 0.7,
                exit_code: 1,
                reason: "exit 1".into(),
                ..Default::default()
            },
        ],
    }));
    let assigned = Update::Event(TaskEvent {
        task_id: "t-1".into(),
        kind: TaskEventKind::Assigned as i32,
        worker_id: "vm".into(),
        attempt: 1,
        reason: "cost 0.051 of 1 candidate(s)".into(),
        ..Default::default()
    });
    let lines: Vec<String> = [
        (Update::Accepted { task_id: "t-1".into() }, "unit: tokenizer"),
        (
            Update::Rejected { task_id: "t-3".into(), reasons: vec!["requirements.memory_mb: -1 must be >= 0".into()] },
            "",
        ),
        (assigned, "unit: tokenizer"),
        (ok, "unit: tokenizer"),
        (split, "suite in 2 shards"),
    ]
    .iter()
    .filter_map(|(u, name)| update(u, name))
    .collect();
    let bars = [
        Progress { done: 0, failed: 0, running: 0, queued: 20, eta_s: None },
        Progress { done: 6, failed: 1, running: 3, queued: 10, eta_s: Some(73.0) },
        Progress { done: 19, failed: 1, running: 0, queued: 0, eta_s: Some(0.0) },
    ]
    .iter()
    .map(|p| progress(p, 30))
    .collect::<Vec<_>>();
    golden("submit", &format!("{}\n{}\n", lines.join("\n"), bars.join("\n")));
}

#[test]
fn golden_history_and_drain() {
    let ev = |kind: TaskEventKind, at_s: i64, worker: &str, reason: &str| TaskEvent {
        task_id: "t-1".into(),
        kind: kind as i32,
        attempt: 1,
        worker_id: worker.into(),
        timestamp_ms: NOW + at_s * 1000,
        reason: reason.into(),
        ..Default::default()
    };
    let h = History {
        events: vec![
            ev(TaskEventKind::Queued, 0, "", "waiting for a worker"),
            ev(TaskEventKind::Assigned, 1, "vm", ""),
            ev(TaskEventKind::Started, 1, "vm", ""),
            ev(TaskEventKind::Finished, 4, "vm", "TASK_STATUS_SUCCEEDED"),
        ],
        attempts: vec![Attempt {
            result: ExecutionResult {
                attempt: 1,
                status: TaskStatus::Succeeded as i32,
                worker_id: "vm".into(),
                duration_s: 3.2,
                resources: Some(ResourceUsage { memory_peak_mb: 120, cpu_peak_pct: 99.0, ..Default::default() }),
                ..Default::default()
            },
        }],
    };
    golden("history", &history("t-1", &h));
    golden("history_empty", &history("t-none", &History::default()));
    let d = DrainReply {
        worker_id: "cpu-box-1".into(),
        draining: true,
        reason: "kernel upgrade".into(),
        since_ms: NOW - 30_000,
        running: vec!["t-1".into(), "t-9".into()],
    };
    let undrained = DrainReply { worker_id: "cpu-box-1".into(), ..Default::default() };
    golden("drain", &format!("{}{}", drain(&d, NOW), drain(&undrained, NOW)));
}
