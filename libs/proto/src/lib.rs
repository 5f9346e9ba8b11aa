//! Message contracts of hwsched: prost types generated from `schemas/hwsched/v1`,
//! each with a proto3-JSON form (pbjson). Every other crate uses these types.
#![allow(missing_debug_implementations)]

pub mod failure;
pub mod metric;

/// `hwsched.v1`: the current wire version.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/hwsched.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/hwsched.v1.serde.rs"));
}

pub mod ids;

/// Schema version written into every message's `schema_version` field.
pub const SCHEMA_VERSION: u32 = 1;

pub use ids::{is_valid_digest, is_valid_id, DIGEST_PREFIX};

/// CPU cores a task reserves when its requirements leave `cpu_cores` unset.
pub const DEFAULT_CPU_CORES: f64 = 1.0;

/// Why `slots` on a worker of `cores` logical cores run fewer tasks at once
/// than it seems: each task reserves [`DEFAULT_CPU_CORES`] unless it asks for
/// less. `None` when the slots fit the cores, or the cores are unknown (0).
pub fn slots_beyond_cores(slots: u32, cores: u32) -> Option<String> {
    let by_default = (f64::from(cores) / DEFAULT_CPU_CORES).floor() as u32;
    (cores > 0 && slots > by_default).then(|| {
        format!(
            "{cores} cores: {by_default} tasks of {DEFAULT_CPU_CORES} core at once, {slots} only if they ask for less"
        )
    })
}
pub use prost::Message;

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn slots_beyond_the_cores_are_explained() {
        assert_eq!(
            super::slots_beyond_cores(6, 2).as_deref(),
            Some("2 cores: 2 tasks of 1 core at once, 6 only if they ask for less")
        );
        assert_eq!(super::slots_beyond_cores(2, 2), None);
        assert_eq!(super::slots_beyond_cores(4, 0), None, "unknown cores: nothing to say");
    }

    #[test]
    fn json_task_request_from_the_documented_example_decodes() {
        let json = r#"{"task_id": "t-1", "name": "resnet", "command": ["pytest", "-x"], "env": {},
            "test_type": "vision_classification", "model_family": "resnet", "model_id": "resnet50",
            "priority": 3, "timeout_s": 600, "max_attempts": 3, "concurrency_key": "k",
            "expected_duration_s": 60, "requirements": {"cpu_cores": 1, "memory_mb": 512,
            "gpus": {"count": 1, "min_memory_mb": 16000, "vendor": "nvidia", "models": ["H100"]},
            "accelerators": {"tpu": 1}, "backends": ["cuda"], "software": {"python": ">=3.10"}, "labels": {}},
            "placement": {"strategy": "single", "shards": 1}}"#;
        let t: TaskRequest = serde_json::from_str(json).expect("decodes");
        assert_eq!(t.task_id, "t-1");
        assert_eq!(t.command, vec!["pytest", "-x"]);
        let req = t.requirements.as_ref().expect("requirements");
        assert_eq!(req.memory_mb, 512);
        assert_eq!(req.gpus.as_ref().map(|g| g.count), Some(1));
        assert_eq!(req.accelerators.get("tpu"), Some(&1));
        assert_eq!(req.software.get("python").map(String::as_str), Some(">=3.10"));
        assert_eq!(t.placement.as_ref().map(|p| p.strategy.as_str()), Some("single"));
        // and the protobuf form round-trips
        let back = TaskRequest::decode(t.encode_to_vec().as_slice()).expect("proto");
        assert_eq!(back, t);
    }

    #[test]
    fn json_with_unknown_field_is_an_error_naming_it() {
        let err =
            serde_json::from_str::<TaskRequest>(r#"{"task_id": "a", "memroy_mb": 5}"#).expect_err("unknown field");
        assert!(err.to_string().contains("memroy_mb"), "{err}");
    }
}
