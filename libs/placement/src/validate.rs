//! Validation of task requests: every problem found, each naming its field.
//! Producers get these lines back verbatim, so they must say what to change.

use hwsched_proto::{
    is_valid_id,
    v1::{Placement, Requirements, TaskRequest},
};

use crate::group::SEPARATOR;

/// Accelerator kinds a task may ask for. Custom kinds start with `x-`.
pub const KNOWN_ACCELERATORS: &[&str] =
    &["tpu", "npu", "dsp", "fpga", "asic", "webgpu", "webnn", "mobile", "gaudi", "inferentia", "trainium"];
/// Placement strategies.
pub const STRATEGIES: &[&str] = &["single", "gang", "sharded", "replicated"];
/// Most shards or replicas of one task.
pub const MAX_PARTS: usize = 256;

/// Default priority when unset (0).
pub const DEFAULT_PRIORITY: u32 = 3;
/// Default timeout when unset (0), seconds.
pub const DEFAULT_TIMEOUT_S: u32 = 3600;
/// Default attempts when unset (0).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub use hwsched_proto::DEFAULT_CPU_CORES;

const MAX_ID: usize = 128;
const MAX_TEXT: usize = 1024;
const MAX_ARGS: usize = 4096;
const MAX_ARG_BYTES: usize = 128 * 1024;
const MAX_TIMEOUT_S: u32 = 7 * 24 * 3600;
const MAX_ATTEMPTS: u32 = 20;

/// Checks `t`, returning every problem as "field: reason" (in the order of
/// the fields; within a map field, by key).
pub fn validate(t: &TaskRequest) -> Result<(), Vec<String>> {
    let mut errs = Vec::new();
    let mut bad = |field: &str, reason: String| errs.push(format!("{field}: {reason}"));
    check_id_and_command(&mut bad, t);
    check_texts_and_limits(&mut bad, t);
    crate::files::check_files(&mut bad, t);
    if let Some(r) = &t.requirements {
        check_requirements(&mut bad, r);
    }
    if let Some(p) = &t.placement {
        check_placement(&mut bad, p);
    }
    if let Some(Err(why)) = t.retry.as_ref().map(crate::retry::Retry::check) {
        bad("retry", why);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// The task id, the command and the environment's variable names.
fn check_id_and_command(bad: &mut impl FnMut(&str, String), t: &TaskRequest) {
    if t.task_id.is_empty() {
        bad("task_id", "is required (set by the producer; used for de-duplication)".into());
    } else if !is_valid_id(&t.task_id) || t.task_id.len() > MAX_ID {
        bad("task_id", format!("{:?} must be 1..={MAX_ID} characters of [A-Za-z0-9_-]", truncate(&t.task_id)));
    } else if t.task_id.contains(SEPARATOR) {
        bad("task_id", "must not contain \"--\": it marks the shards and replicas of a task".into());
    }
    if t.command.is_empty() || t.command[0].trim().is_empty() {
        bad("command", "is required: the argv to run, e.g. [\"pytest\", \"tests/x.py\"]".into());
    }
    if t.command.len() > MAX_ARGS {
        bad("command", format!("has {} arguments, at most {MAX_ARGS}", t.command.len()));
    }
    let arg_bytes: usize = t.command.iter().map(String::len).sum();
    if arg_bytes > MAX_ARG_BYTES {
        bad("command", format!("is {arg_bytes} bytes, at most {MAX_ARG_BYTES}"));
    }
    if t.command.iter().any(|a| a.contains('\0')) {
        bad("command", "contains a NUL byte".into());
    }
    for k in t.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            bad("env", format!("invalid variable name {:?}", truncate(k)));
        }
    }
}

/// The free texts, priority, timeout, attempts and expected duration.
fn check_texts_and_limits(bad: &mut impl FnMut(&str, String), t: &TaskRequest) {
    for (field, v) in [
        ("name", &t.name),
        ("test_type", &t.test_type),
        ("model_family", &t.model_family),
        ("model_id", &t.model_id),
        ("concurrency_key", &t.concurrency_key),
        ("producer", &t.producer),
        ("revision", &t.revision),
    ] {
        if v.len() > MAX_TEXT {
            bad(field, format!("is {} bytes, at most {MAX_TEXT}", v.len()));
        }
        if v.chars().any(char::is_control) {
            bad(field, "contains control characters".into());
        }
    }
    if t.priority > 5 {
        bad("priority", format!("{} is not a priority: use 1 (highest) .. 5 (lowest)", t.priority));
    }
    if t.timeout_s > MAX_TIMEOUT_S {
        bad("timeout_s", format!("{} exceeds {MAX_TIMEOUT_S} (7 days)", t.timeout_s));
    }
    if t.max_attempts > MAX_ATTEMPTS {
        bad("max_attempts", format!("{} exceeds {MAX_ATTEMPTS}", t.max_attempts));
    }
    if !t.expected_duration_s.is_finite() || t.expected_duration_s < 0.0 {
        bad("expected_duration_s", format!("{} must be a non-negative number of seconds", t.expected_duration_s));
    }
}

/// The requirements: cores, memory, GPUs, accelerators, classes, software.
fn check_requirements(bad: &mut impl FnMut(&str, String), r: &Requirements) {
    if !r.cpu_cores.is_finite() || r.cpu_cores < 0.0 || r.cpu_cores > 4096.0 {
        bad("requirements.cpu_cores", format!("{} must be between 0 and 4096", r.cpu_cores));
    }
    if r.memory_mb < 0 || r.memory_mb > 64 * 1024 * 1024 {
        bad("requirements.memory_mb", format!("{} must be between 0 and 67108864 (64 TiB)", r.memory_mb));
    }
    if let Some(g) = &r.gpus {
        if g.count > 64 {
            bad("requirements.gpus.count", format!("{} exceeds 64", g.count));
        }
        if g.min_memory_mb < 0 {
            bad("requirements.gpus.min_memory_mb", format!("{} must not be negative", g.min_memory_mb));
        }
        if !g.min_compute_capability.is_empty() && parse_capability(&g.min_compute_capability).is_none() {
            bad(
                "requirements.gpus.min_compute_capability",
                format!("{:?} must look like \"8.0\"", truncate(&g.min_compute_capability)),
            );
        }
    }
    for kind in r.accelerators.keys() {
        let n = r.accelerators[kind];
        if !KNOWN_ACCELERATORS.contains(&kind.as_str()) && !kind.starts_with("x-") {
            bad(
                "requirements.accelerators",
                format!(
                    "unknown accelerator {:?}: known are {} (or x-<custom>)",
                    truncate(kind),
                    KNOWN_ACCELERATORS.join(", ")
                ),
            );
        } else if n == 0 || n > 1024 {
            bad("requirements.accelerators", format!("{kind}: count {n} must be 1..=1024"));
        }
    }
    check_classes(bad, "requirements.hardware_classes", &r.hardware_classes);
    for name in r.software.keys() {
        let req = &r.software[name];
        if let Err(e) = semver::VersionReq::parse(req) {
            bad(
                "requirements.software",
                format!("{name}: {:?} is not a version requirement ({e}); e.g. \">=3.10\"", truncate(req)),
            );
        }
    }
}

/// The placement: strategy, shards, replicated hardware classes.
fn check_placement(bad: &mut impl FnMut(&str, String), p: &Placement) {
    if !p.strategy.is_empty() && !STRATEGIES.contains(&p.strategy.as_str()) {
        bad("placement.strategy", format!("{:?} must be one of {}", truncate(&p.strategy), STRATEGIES.join(", ")));
    }
    match p.strategy.as_str() {
        "sharded" if p.shards < 2 || p.shards as usize > MAX_PARTS => bad(
            "placement.shards",
            format!("{} must be 2..={MAX_PARTS} for strategy sharded (1 shard is a single task)", p.shards),
        ),
        "sharded" => {}
        _ if p.shards > 1 => {
            bad("placement.shards", format!("{} shards need strategy \"sharded\", not {:?}", p.shards, p.strategy))
        }
        _ => {}
    }
    if p.strategy == "replicated" {
        if p.hardware_classes.is_empty() {
            bad("placement.hardware_classes", "lists the hardware classes to replicate on (one copy each)".into());
        }
        check_classes(bad, "placement.hardware_classes", &p.hardware_classes);
    } else if !p.hardware_classes.is_empty() {
        bad(
            "placement.hardware_classes",
            format!(
                "are for strategy \"replicated\", not {:?}; use requirements.hardware_classes to restrict a task",
                p.strategy
            ),
        );
    }
}

/// Hardware class patterns: at most [`MAX_PARTS`], each non-empty, distinct,
/// of `[A-Za-z0-9:._-]`.
fn check_classes(bad: &mut impl FnMut(&str, String), field: &str, classes: &[String]) {
    if classes.len() > MAX_PARTS {
        bad(field, format!("has {} entries, at most {MAX_PARTS}", classes.len()));
        return;
    }
    for (i, c) in classes.iter().enumerate() {
        let ok_chars = c.bytes().all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b));
        if c.is_empty() || c.len() > MAX_ID || !ok_chars {
            bad(
                field,
                format!(
                    "{:?} must be 1..={MAX_ID} characters of [A-Za-z0-9:._-], e.g. \"gpu:nvidia-h100\"",
                    truncate(c)
                ),
            );
        } else if classes[..i].iter().any(|o| o.eq_ignore_ascii_case(c)) {
            bad(field, format!("{c:?} is listed twice"));
        }
    }
}

/// Parses "8.0" / "9" into (major, minor).
pub fn parse_capability(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().splitn(2, '.');
    let major = it.next()?.parse().ok()?;
    let minor = match it.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::GpuRequirement;

    fn ok_task() -> TaskRequest {
        TaskRequest { task_id: "t-1".into(), command: vec!["true".into()], ..Default::default() }
    }

    fn errors_of(t: TaskRequest) -> Vec<String> {
        validate(&t).expect_err("should be invalid")
    }

    #[test]
    fn minimal_task_is_valid() {
        validate(&ok_task()).expect("valid");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases: Vec<(TaskRequest, &str)> = vec![
            (TaskRequest { task_id: String::new(), ..ok_task() }, "task_id"),
            (TaskRequest { task_id: "a.b".into(), ..ok_task() }, "task_id"),
            (TaskRequest { task_id: "x".repeat(129), ..ok_task() }, "task_id"),
            (TaskRequest { command: vec![], ..ok_task() }, "command"),
            (TaskRequest { priority: 9, ..ok_task() }, "priority"),
            (TaskRequest { expected_duration_s: -1.0, ..ok_task() }, "expected_duration_s"),
            (TaskRequest { name: "a\u{7}b".into(), ..ok_task() }, "name"),
            (
                TaskRequest { requirements: Some(Requirements { memory_mb: -512, ..Default::default() }), ..ok_task() },
                "requirements.memory_mb",
            ),
            (
                TaskRequest {
                    requirements: Some(Requirements { cpu_cores: f64::NAN, ..Default::default() }),
                    ..ok_task()
                },
                "requirements.cpu_cores",
            ),
            (
                TaskRequest {
                    requirements: Some(Requirements {
                        accelerators: [("quantum".to_string(), 1)].into(),
                        ..Default::default()
                    }),
                    ..ok_task()
                },
                "requirements.accelerators",
            ),
            (
                TaskRequest {
                    requirements: Some(Requirements {
                        software: [("python".to_string(), "three".to_string())].into(),
                        ..Default::default()
                    }),
                    ..ok_task()
                },
                "requirements.software",
            ),
            (
                TaskRequest {
                    requirements: Some(Requirements {
                        gpus: Some(GpuRequirement { min_memory_mb: -1, ..Default::default() }),
                        ..Default::default()
                    }),
                    ..ok_task()
                },
                "requirements.gpus.min_memory_mb",
            ),
            (
                TaskRequest {
                    placement: Some(Placement { strategy: "random".into(), shards: 1, ..Default::default() }),
                    ..ok_task()
                },
                "placement.strategy",
            ),
            (TaskRequest { task_id: "suite--s1".into(), ..ok_task() }, "task_id"),
            (TaskRequest { placement: Some(placement("sharded", 1, &[])), ..ok_task() }, "placement.shards"),
            (TaskRequest { placement: Some(placement("sharded", 257, &[])), ..ok_task() }, "placement.shards"),
            (TaskRequest { placement: Some(placement("single", 4, &[])), ..ok_task() }, "placement.shards"),
            (
                TaskRequest { placement: Some(placement("replicated", 0, &[])), ..ok_task() },
                "placement.hardware_classes",
            ),
            (
                TaskRequest { placement: Some(placement("replicated", 0, &["cpu", "CPU"])), ..ok_task() },
                "placement.hardware_classes",
            ),
            (
                TaskRequest { placement: Some(placement("single", 0, &["gpu:nvidia-h100"])), ..ok_task() },
                "placement.hardware_classes",
            ),
            (
                TaskRequest {
                    requirements: Some(Requirements {
                        hardware_classes: vec!["gpu h100".into()],
                        ..Default::default()
                    }),
                    ..ok_task()
                },
                "requirements.hardware_classes",
            ),
        ];
        for (task, field) in cases {
            let errs = errors_of(task);
            assert!(errs.iter().any(|e| e.starts_with(&format!("{field}:"))), "expected {field} in {errs:?}");
        }
    }

    fn placement(strategy: &str, shards: u32, classes: &[&str]) -> Placement {
        Placement {
            strategy: strategy.into(),
            shards,
            hardware_classes: classes.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn sharded_and_replicated_tasks_are_valid() {
        validate(&TaskRequest { placement: Some(placement("sharded", 4, &[])), ..ok_task() }).expect("sharded");
        validate(&TaskRequest {
            placement: Some(placement("replicated", 0, &["cpu", "gpu:nvidia-h100"])),
            ..ok_task()
        })
        .expect("replicated");
        // what producers sent before these strategies existed stays valid
        validate(&TaskRequest { placement: Some(placement("single", 1, &[])), ..ok_task() }).expect("single");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let errs =
            errors_of(TaskRequest { task_id: String::new(), command: vec![], priority: 7, ..Default::default() });
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn capability_parsing() {
        assert_eq!(parse_capability("8.6"), Some((8, 6)));
        assert_eq!(parse_capability("9"), Some((9, 0)));
        assert_eq!(parse_capability("x"), None);
    }

    #[test]
    fn problems_in_map_fields_are_listed_by_key() {
        let t = TaskRequest {
            env: (0..20).map(|i| (format!("K{i:02}=bad"), String::new())).collect(),
            requirements: Some(Requirements {
                accelerators: (0..20).map(|i| (format!("unknown-{i:02}"), 1)).collect(),
                software: (0..20).map(|i| (format!("sw{i:02}"), "not a version".to_string())).collect(),
                ..Default::default()
            }),
            ..ok_task()
        };
        let errs = errors_of(t);
        for field in ["env:", "requirements.accelerators:", "requirements.software:"] {
            let of: Vec<&String> = errs.iter().filter(|e| e.starts_with(field)).collect();
            assert_eq!(of.len(), 20, "{field} {errs:?}");
            let mut sorted = of.clone();
            sorted.sort();
            assert_eq!(of, sorted, "{field} in key order");
        }
    }
}
