//! Suite files: many tasks in one JSON or YAML file, either a list of tasks
//! or `{"tasks": [...]}`, each in the documented JSON form of `TaskRequest`
//! (snake_case or camelCase fields; unknown fields are errors). Every problem
//! is reported with the file, the line and column when the parser knows them,
//! and the field (`tasks[3].requirements.memory_mb`), so it can be fixed
//! without guessing.

use std::path::{Path, PathBuf};

use hwsched_proto::v1::TaskRequest;
use serde::Deserialize;

/// A suite file that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// Unreadable file.
    #[error("{}: {reason}", path.display())]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        reason: String,
    },
    /// Not valid JSON/YAML, or a field of the wrong type or name.
    #[error("{}{}: {field}{reason}", path.display(), at(*line, *column))]
    Syntax {
        /// File.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// Path of the field (`tasks[2].requirements.gpus.count`), empty at the top.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Well-formed, but tasks the scheduler would refuse: one line per task,
    /// `task #N (id): field: reason; ...`. Nothing of the suite is submitted.
    #[error("{}: {} invalid task(s), nothing submitted:\n  {}", path.display(), problems.len(), problems.join("\n  "))]
    Invalid {
        /// File.
        path: PathBuf,
        /// One per invalid task.
        problems: Vec<String>,
    },
    /// Two tasks with one id.
    #[error("{}: task #{index} repeats the id {task_id:?} of task #{first}", path.display())]
    DuplicateId {
        /// File.
        path: PathBuf,
        /// 1-based position of the repeat.
        index: usize,
        /// 1-based position of the first.
        first: usize,
        /// The id.
        task_id: String,
    },
    /// No task in it.
    #[error("{}: no task in the suite", path.display())]
    Empty {
        /// File.
        path: PathBuf,
    },
}

fn at(line: usize, column: usize) -> String {
    match (line, column) {
        (0, _) => String::new(),
        (l, 0) => format!(":{l}"),
        (l, c) => format!(":{l}:{c}"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    tasks: Vec<TaskRequest>,
}

/// Reads a suite: YAML when the file name ends in `.yaml`/`.yml`, else JSON.
/// Tasks without an id get a generated one; each task is validated as the
/// scheduler would.
pub fn load(path: &Path) -> Result<Vec<TaskRequest>, SuiteError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SuiteError::Read { path: path.into(), reason: e.to_string() })?;
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    parse(path, &text, yaml)
}

/// Parses suite `text` (named `path` in errors).
pub fn parse(path: &Path, text: &str, yaml: bool) -> Result<Vec<TaskRequest>, SuiteError> {
    let mut tasks = if yaml { from_yaml(path, text)? } else { from_json(path, text)? };
    if tasks.is_empty() {
        return Err(SuiteError::Empty { path: path.into() });
    }
    let mut seen = std::collections::HashMap::new();
    let mut invalid = Vec::new();
    for (i, t) in tasks.iter_mut().enumerate() {
        if t.task_id.is_empty() {
            t.task_id = crate::new_task_id();
        }
        if let Some(first) = seen.insert(t.task_id.clone(), i + 1) {
            return Err(SuiteError::DuplicateId { path: path.into(), index: i + 1, first, task_id: t.task_id.clone() });
        }
        if let Err(problems) = hwsched_placement::validate(t) {
            invalid.push(format!("task #{} ({}): {}", i + 1, t.task_id, problems.join("; ")));
        }
    }
    if invalid.is_empty() {
        Ok(tasks)
    } else {
        Err(SuiteError::Invalid { path: path.into(), problems: invalid })
    }
}

fn field(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        format!("{s}: ")
    }
}

fn from_json(path: &Path, text: &str) -> Result<Vec<TaskRequest>, SuiteError> {
    let wrapped = text.trim_start().starts_with('{');
    let err = |e: serde_path_to_error::Error<serde_json::Error>| SuiteError::Syntax {
        path: path.into(),
        line: e.inner().line(),
        column: e.inner().column(),
        field: field(e.path()),
        reason: e.inner().to_string().split(" at line ").next().unwrap_or_default().to_string(),
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    if wrapped {
        let w: Wrapped = serde_path_to_error::deserialize(de).map_err(err)?;
        Ok(w.tasks)
    } else {
        serde_path_to_error::deserialize(de).map_err(err)
    }
}

fn from_yaml(path: &Path, text: &str) -> Result<Vec<TaskRequest>, SuiteError> {
    // the shape first (a list, or a mapping with `tasks`), then the typed read with positions
    let shape: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| yaml_err(path, "", &e))?;
    let de = serde_yaml::Deserializer::from_str(text);
    let err = |e: serde_path_to_error::Error<serde_yaml::Error>| yaml_err(path, &field(e.path()), e.inner());
    match shape {
        serde_yaml::Value::Mapping(_) => {
            let w: Wrapped = serde_path_to_error::deserialize(de).map_err(err)?;
            Ok(w.tasks)
        }
        serde_yaml::Value::Sequence(_) => serde_path_to_error::deserialize(de).map_err(err),
        serde_yaml::Value::Null => Ok(vec![]),
        _ => Err(SuiteError::Syntax {
            path: path.into(),
            line: 1,
            column: 1,
            field: String::new(),
            reason: "expected a list of tasks or a mapping with `tasks:`".into(),
        }),
    }
}

fn yaml_err(path: &Path, field: &str, e: &serde_yaml::Error) -> SuiteError {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let reason = e.to_string();
    // serde_yaml appends " at line L column C" itself
    let mut reason = reason.split(" at line ").next().unwrap_or_default();
    // and may start with its own (shorter) path of the field: ours says it already
    if let Some((head, rest)) = reason.split_once(": ") {
        if !head.is_empty() && !head.contains(' ') && field.trim_end_matches(": ").starts_with(head) {
            reason = rest;
        }
    }
    SuiteError::Syntax { path: path.into(), line, column, field: field.into(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<Vec<TaskRequest>, String> {
        parse(Path::new("suite.json"), text, false).map_err(|e| e.to_string())
    }

    fn yaml(text: &str) -> Result<Vec<TaskRequest>, String> {
        parse(Path::new("suite.yaml"), text, true).map_err(|e| e.to_string())
    }

    #[test]
    fn both_shapes_in_both_languages() {
        let list = json(r#"[{"task_id": "a", "command": ["true"]}, {"command": ["false"]}]"#).expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].task_id, "a");
        assert!(list[1].task_id.starts_with("t-"), "generated id: {}", list[1].task_id);
        let wrapped = json(r#"{"tasks": [{"taskId": "b", "command": ["true"], "timeoutS": 5}]}"#).expect("wrapped");
        assert_eq!((wrapped[0].task_id.as_str(), wrapped[0].timeout_s), ("b", 5));
        let y = yaml("tasks:\n  - task_id: c\n    command: [pytest, x.py]\n    requirements:\n      memory_mb: 512\n")
            .expect("yaml");
        assert_eq!(y[0].requirements.as_ref().map(|r| r.memory_mb), Some(512));
        let y = yaml("- command: [\"true\"]\n  priority: 1\n").expect("yaml list");
        assert_eq!(y[0].priority, 1);
    }

    #[test]
    fn a_wrong_field_is_named_with_its_line() {
        let text = "tasks:\n  - task_id: ok\n    command: [\"true\"]\n  - task_id: bad\n    command: [\"true\"]\n    requirements:\n      memory_mb: lots\n";
        let e = yaml(text).expect_err("bad memory");
        assert!(e.starts_with("suite.yaml:7:"), "{e}");
        assert!(e.contains("tasks[1].requirements.memory_mb: invalid"), "the field once: {e}");
        let e = json("[\n {\"command\": [\"true\"]},\n {\"command\": [\"true\"], \"requirments\": {}}\n]")
            .expect_err("typo");
        assert!(e.starts_with("suite.json:3:"), "{e}");
        assert!(e.contains("[1]") && e.contains("requirments"), "{e}");
        let e = json("[{\"command\": [\"true\"]},").expect_err("truncated");
        assert!(e.starts_with("suite.json:1:"), "{e}");
    }

    #[test]
    fn invalid_tasks_and_repeated_ids_are_refused_by_position() {
        let e = json(
            r#"[{"task_id": "x", "command": ["true"]}, {"task_id": "y", "command": []},
                {"task_id": "z", "command": ["true"], "priority": 9, "requirements": {"memory_mb": -1}}]"#,
        )
        .expect_err("invalid");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines[0], "suite.json: 2 invalid task(s), nothing submitted:", "{e}");
        assert!(lines[1].starts_with("  task #2 (y): command: "), "{e}");
        assert!(
            lines[2].starts_with("  task #3 (z): ") && lines[2].contains("priority") && lines[2].contains("memory_mb"),
            "{e}"
        );
        let e =
            json(r#"[{"task_id": "x", "command": ["true"]}, {"task_id": "x", "command": ["true"]}]"#).expect_err("dup");
        assert!(e.contains("task #2 repeats the id \"x\" of task #1"), "{e}");
        assert!(json("[]").expect_err("empty").contains("no task"));
        assert!(yaml("just a string").expect_err("scalar").contains("expected a list"));
    }
}
