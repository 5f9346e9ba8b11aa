//! Workload keys: how a result, a task and the model name the same work.

use hwsched_proto::v1::{ExecutionResult, TaskRequest};

/// The workload key: test type, model (id, else family) and test name.
pub fn key(test_type: &str, model_family: &str, model_id: &str, name: &str) -> String {
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let model = if model_id.is_empty() { model_family } else { model_id };
    format!("{}/{}/{}", or_dash(test_type), or_dash(model), or_dash(name))
}

/// The workload key of a result.
pub fn workload_key(r: &ExecutionResult) -> String {
    key(&r.test_type, &r.model_family, &r.model_id, &r.name)
}

/// The workload key of a task (the same as its results').
pub fn task_workload_key(t: &TaskRequest) -> String {
    key(&t.test_type, &t.model_family, &t.model_id, &t.name)
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn the_model_id_wins_over_the_family_and_blanks_become_dashes() {
        assert_eq!(key("unit", "llama", "llama-7b", "t"), "unit/llama-7b/t");
        assert_eq!(key("unit", "llama", "", "t"), "unit/llama/t");
        assert_eq!(key("", "", "", ""), "-/-/-");
    }
}
