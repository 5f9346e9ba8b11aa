//! The synthetic fleet and task the placement benches share.
#![allow(dead_code)]

use hwsched_model::Model;
use hwsched_placement::{Reserved, WorkerView};
use hwsched_proto::v1::{
    CpuInfo, ExecutionResult, GpuInfo, GpuRequirement, Requirements, TaskRequest, TaskStatus, WorkerCapabilities,
    WorkerState,
};

/// Hardware class of worker `i`: a third CPU-only, then H100 and A100 hosts.
fn class(i: usize) -> &'static str {
    match (i % 3, i % 2) {
        (0, _) => "cpu:x86_64",
        (_, 0) => "gpu:nvidia-h100-80gb-hbm3",
        _ => "gpu:nvidia-a100-sxm4-40gb",
    }
}

/// `n` workers: 64 cores, 512 GB, 0/4/8 GPUs of two models, 8 slots partly used.
pub fn workers(n: usize) -> Vec<WorkerView> {
    (0..n)
        .map(|i| WorkerView {
            caps: std::sync::Arc::new(WorkerCapabilities {
                worker_id: format!("w{i:04}"),
                cpu: Some(CpuInfo { logical_cores: 64, ..Default::default() }),
                memory_mb: 512 * 1024,
                slots: 8,
                gpus: (0..(i % 3) as u32 * 4)
                    .map(|g| GpuInfo {
                        index: g,
                        vendor: "nvidia".into(),
                        model: if i % 2 == 0 { "NVIDIA H100 80GB HBM3" } else { "NVIDIA A100-SXM4-40GB" }.into(),
                        memory_mb: 81559,
                        compute_capability: "9.0".into(),
                        ..Default::default()
                    })
                    .collect(),
                software: [("python".to_string(), "3.11.7".to_string())].into(),
                hardware_class: class(i).into(),
                ..Default::default()
            }),
            state: WorkerState::Active,
            reserved: Reserved { slots: (i % 8) as u32, cpu_cores: (i % 8) as f64, ..Default::default() },
            cpu_util_pct: (i * 7 % 100) as f64,
            tasks_cpu_pct: 0.0,
            tasks_mem_pct: 0.0,
            max_temp_c: 60.0,
            throttling: false,
            hot: false,
            recent_families: Default::default(),
            mem_util_pct: 0.0,
            gpu_util_pct: 0.0,
            free_in_s: None,
            hold_s: None,
            shape: 0,
        })
        .map(|mut w| {
            w.shape = hwsched_placement::view::shape_of(&w.caps);
            w
        })
        .collect()
}

/// One task: 4 cores, 16 GB, one H100, python >= 3.10.
pub fn gpu_task() -> TaskRequest {
    TaskRequest {
        task_id: "bench".into(),
        command: vec!["pytest".into()],
        requirements: Some(Requirements {
            cpu_cores: 4.0,
            memory_mb: 16384,
            gpus: Some(GpuRequirement { count: 1, models: vec!["H100".into()], ..Default::default() }),
            software: [("python".to_string(), ">=3.10".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Half the workers report when a slot frees up (so busy ones are candidates too).
pub fn with_busy(mut ws: Vec<WorkerView>) -> Vec<WorkerView> {
    for (i, w) in ws.iter_mut().enumerate() {
        if i % 2 == 0 {
            w.free_in_s = Some((i % 300) as f64);
        }
    }
    ws
}

/// A model that knows the bench task on every class.
pub fn model() -> Model {
    let mut m = Model::default();
    for (hw, secs) in [("gpu:nvidia-h100-80gb-hbm3", 20.0), ("gpu:nvidia-a100-sxm4-40gb", 35.0), ("cpu:x86_64", 900.0)]
    {
        for _ in 0..3 {
            m.observe(&ExecutionResult {
                hardware_class: hw.into(),
                duration_s: secs,
                status: TaskStatus::Succeeded as i32,
                ..Default::default()
            });
        }
    }
    m
}
