//! `hwsched submit --wait --junit FILE`: one JUnit XML report for the whole
//! submission, for CI systems to display. A task whose result lists a JUnit
//! report (`Artifact.junit`) contributes its own test cases, one
//! `<testsuite>` per reported suite, read from `hws_artifacts`
//! (`hwsched_bus::objects::junit_cases`); any other task is one test case,
//! failed with its reasons and output tails when it did not succeed. Every
//! suite carries the task, attempt, worker and hardware class as properties.
//! A sharded or replicated task contributes each of its parts.

use std::{collections::HashMap, path::PathBuf};

use anyhow::Context as _;
use hwsched_bus::objects;
use hwsched_client::{Client, Finished, Update};
use hwsched_junit::{Case, Status, Suite};
use hwsched_proto::v1::{ExecutionResult, PartResult, TaskStatus, TestCase};

/// The `name` of the report's `<testsuites>`.
const REPORT_NAME: &str = "hwsched";
/// The `classname` of the one case a task without a report becomes.
const TASK_CLASS: &str = "hwsched.task";

/// Task id -> name, as submitted (a part, or a task without a name, shows its id).
pub type Names = HashMap<String, String>;

fn label(names: &Names, task_id: &str) -> String {
    let named = |id: &str| names.get(id).filter(|n| !n.is_empty()).cloned();
    match (named(task_id), hwsched_placement::group::parent_of(task_id).and_then(named)) {
        (Some(name), _) => name,
        (None, Some(parent)) => format!("{parent} ({task_id})"),
        (None, None) => task_id.to_owned(),
    }
}

/// How a task ended, as far as the report needs it.
#[derive(Debug)]
enum Ended {
    Finished(Box<Finished>),
    Rejected {
        task_id: String,
        reasons: Vec<String>,
    },
    Duplicate {
        task_id: String,
    },
    /// Still open when the wait ended early (timeout, interrupt).
    Unfinished {
        task_id: String,
        why: String,
    },
}

/// Collects how each task ended while `submit --wait` follows them, then writes the report.
#[derive(Debug)]
pub struct JunitReport {
    path: PathBuf,
    names: Names,
    ended: Vec<Ended>,
}

impl JunitReport {
    /// A report to be written to `path`, naming the tasks by `names`.
    pub fn new(path: PathBuf, names: Names) -> Self {
        Self { path, names, ended: Vec::new() }
    }

    /// Notes an update; only ends matter.
    pub fn observe(&mut self, u: &Update) {
        match u {
            Update::Finished(f) => self.ended.push(Ended::Finished(f.clone())),
            Update::Rejected { task_id, reasons } => {
                self.ended.push(Ended::Rejected { task_id: task_id.clone(), reasons: reasons.clone() })
            }
            Update::Duplicate { task_id } => self.ended.push(Ended::Duplicate { task_id: task_id.clone() }),
            Update::Accepted { .. } | Update::Event(_) => {}
        }
    }

    /// Notes the tasks still open when the wait ends early, so a CI job that
    /// gives up still publishes what finished and says what did not.
    pub fn unfinished<'a>(&mut self, task_ids: impl IntoIterator<Item = &'a String>, why: &str) {
        self.ended.extend(task_ids.into_iter().map(|t| Ended::Unfinished { task_id: t.clone(), why: why.to_owned() }));
    }

    /// Reads the tasks' JUnit reports and writes the merged report to the file.
    pub async fn write(self, client: &Client) -> anyhow::Result<()> {
        let names = &self.names;
        let mut suites = Vec::new();
        for ended in &self.ended {
            match ended {
                Ended::Finished(f) if !f.parts.is_empty() => {
                    for part in &f.parts {
                        let result = last_result(client, &part.task_id).await;
                        suites.extend(part_suites(client, part, result.as_ref(), names).await);
                    }
                }
                Ended::Finished(f) => suites.extend(finished_suites(client, f, names).await),
                Ended::Rejected { task_id, reasons } => {
                    let message = format!("rejected: {}", reasons.join("; "));
                    suites.push(task_suite(
                        task_id,
                        names,
                        vec![],
                        task_case(label(names, task_id), Status::Error, message),
                    ));
                }
                Ended::Unfinished { task_id, why } => {
                    let message = format!("did not finish: {why}");
                    suites.push(task_suite(
                        task_id,
                        names,
                        vec![],
                        task_case(label(names, task_id), Status::Error, message),
                    ));
                }
                Ended::Duplicate { task_id } => {
                    let message = "already submitted earlier: not run again, not followed".to_owned();
                    suites.push(task_suite(
                        task_id,
                        names,
                        vec![],
                        task_case(label(names, task_id), Status::Skipped, message),
                    ));
                }
            }
        }
        let xml = hwsched_junit::write(REPORT_NAME, &suites);
        std::fs::write(&self.path, xml).with_context(|| format!("write the JUnit report {}", self.path.display()))
    }
}

/// The last attempt's result of `task_id`, from the results stream.
async fn last_result(client: &Client, task_id: &str) -> Option<ExecutionResult> {
    let history = client.history(task_id).await.ok()?;
    history.attempts.into_iter().last().map(|a| a.result)
}

async fn finished_suites(client: &Client, f: &Finished, names: &Names) -> Vec<Suite> {
    let message = outcome_message(f.status, f.exit_code, &f.reasons);
    let mut case = task_case(label(names, &f.task_id), task_status(f.status), message);
    case.case.duration_s = f.duration_s;
    attempt_suites(client, &f.task_id, f.result.as_ref(), case, names).await
}

async fn part_suites(client: &Client, p: &PartResult, result: Option<&ExecutionResult>, names: &Names) -> Vec<Suite> {
    let reasons: Vec<String> = [p.reason.clone()].into_iter().filter(|r| !r.is_empty()).collect();
    let message = outcome_message(p.status(), p.exit_code, &reasons);
    let mut case = task_case(label(names, &p.task_id), task_status(p.status()), message);
    case.case.duration_s = p.duration_s;
    let mut suites = attempt_suites(client, &p.task_id, result, case, names).await;
    if result.is_none() {
        for s in &mut suites {
            s.properties = properties(&p.task_id, 0, &p.worker_id, &p.hardware_class);
        }
    }
    suites
}

/// The suites of one task (or part): its reported cases when it has a JUnit
/// report, else `task_case` with the result's output tails.
async fn attempt_suites(
    client: &Client,
    task_id: &str,
    result: Option<&ExecutionResult>,
    mut task_case: Case,
    names: &Names,
) -> Vec<Suite> {
    let Some(r) = result else {
        return vec![task_suite(task_id, names, vec![], task_case)];
    };
    let props = properties(task_id, r.attempt, &r.worker_id, &r.hardware_class);
    task_case.system_out = r.stdout_tail.clone();
    task_case.system_err = r.stderr_tail.clone();
    if task_case.detail.is_empty() && !r.error.is_empty() {
        task_case.detail = r.error.clone();
    }
    if !objects::has_junit(r) {
        return vec![task_suite(task_id, names, props, task_case)];
    }
    let found = objects::junit_cases(client.bus(), r).await;
    let mut cases: Vec<Case> = found.cases.into_iter().map(|case| Case { case, ..Case::default() }).collect();
    for error in found.errors {
        cases.push(junit_error_case(error));
    }
    let any_failed = cases.iter().any(|c| matches!(Status::of(&c.case.status), Status::Failed | Status::Error));
    // A task that failed with every test passing (a crash after the tests, a
    // timeout) still shows as failed; a failed test already says so.
    if (Status::of(&task_case.case.status) != Status::Passed && !any_failed) || cases.is_empty() {
        cases.push(task_case);
    }
    group_by_suite(task_id, names, props, cases)
}

/// One `<testsuite>` per reported suite, in order of first appearance, named `<task>: <suite>`.
fn group_by_suite(task_id: &str, names: &Names, props: Vec<(String, String)>, cases: Vec<Case>) -> Vec<Suite> {
    let task = label(names, task_id);
    let mut suites: Vec<Suite> = Vec::new();
    for case in cases {
        let name = if case.case.suite.is_empty() { task.clone() } else { format!("{task}: {}", case.case.suite) };
        match suites.iter_mut().find(|s| s.name == name) {
            Some(s) => s.cases.push(case),
            None => suites.push(Suite { name, properties: props.clone(), cases: vec![case] }),
        }
    }
    suites
}

fn task_suite(task_id: &str, names: &Names, props: Vec<(String, String)>, case: Case) -> Suite {
    let props = if props.is_empty() { properties(task_id, 0, "", "") } else { props };
    Suite { name: label(names, task_id), properties: props, cases: vec![case] }
}

fn task_case(name: String, status: Status, message: String) -> Case {
    let case = TestCase {
        classname: TASK_CLASS.to_owned(),
        name,
        status: status.as_str().to_owned(),
        message: hwsched_junit::first_line(&message, hwsched_junit::MAX_MESSAGE_BYTES),
        ..TestCase::default()
    };
    Case { case, detail: message, ..Case::default() }
}

fn junit_error_case(error: String) -> Case {
    let case = TestCase {
        classname: TASK_CLASS.to_owned(),
        name: "JUnit report".to_owned(),
        status: Status::Error.as_str().to_owned(),
        message: hwsched_junit::first_line(&error, hwsched_junit::MAX_MESSAGE_BYTES),
        ..TestCase::default()
    };
    Case { case, detail: error, ..Case::default() }
}

fn properties(task_id: &str, attempt: u32, worker_id: &str, hardware_class: &str) -> Vec<(String, String)> {
    let mut props = vec![("task_id".to_owned(), task_id.to_owned())];
    if attempt > 0 {
        props.push(("attempt".to_owned(), attempt.to_string()));
    }
    for (key, value) in [("worker", worker_id), ("hardware_class", hardware_class)] {
        if !value.is_empty() {
            props.push((key.to_owned(), value.to_owned()));
        }
    }
    props
}

/// A task's end as a test outcome: success passes, a cancelled or never-run task is an error.
fn task_status(s: TaskStatus) -> Status {
    match s {
        TaskStatus::Succeeded => Status::Passed,
        TaskStatus::Failed | TaskStatus::TimedOut => Status::Failed,
        TaskStatus::Error | TaskStatus::Cancelled | TaskStatus::Unspecified => Status::Error,
    }
}

/// What a task's case says: its end on the first line ("failed with exit code 3",
/// "timed out"), then the scheduler's reasons, one a line. Empty on success.
fn outcome_message(s: TaskStatus, exit_code: i32, reasons: &[String]) -> String {
    if s == TaskStatus::Succeeded {
        return String::new();
    }
    let mut message = status_word(s).to_owned();
    if s == TaskStatus::Failed {
        message.push_str(&format!(" with exit code {exit_code}"));
    }
    for reason in reasons {
        message.push('\n');
        message.push_str(reason);
    }
    message
}

fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::TimedOut => "timed out",
        TaskStatus::Error => "could not run",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::Unspecified => "never ran",
    }
}

#[cfg(test)]
mod tests {
    use hwsched_junit::{Case, Status};
    use hwsched_proto::v1::TestCase;

    use super::{group_by_suite, task_case, task_status};
    use hwsched_proto::v1::TaskStatus;

    fn reported(suite: &str, name: &str, status: &str) -> Case {
        let case = TestCase { suite: suite.into(), name: name.into(), status: status.into(), ..TestCase::default() };
        Case { case, ..Case::default() }
    }

    #[test]
    fn reported_cases_group_by_suite_in_order_and_merge_into_one_parseable_report() {
        let names: super::Names = [("task-1".to_owned(), "name-of-task-1".to_owned())].into();
        let props = vec![("worker".to_owned(), "w1".to_owned())];
        let cases = vec![
            reported("a", "t1", "passed"),
            reported("b", "t2", "failed"),
            reported("a", "t3", "skipped"),
            reported("", "t4", "passed"),
        ];
        let mut suites = group_by_suite("task-1", &names, props, cases);
        let got: Vec<_> = suites.iter().map(|s| (s.name.as_str(), s.cases.len())).collect();
        assert_eq!(got, [("name-of-task-1: a", 2), ("name-of-task-1: b", 1), ("name-of-task-1", 1)]);
        assert!(suites.iter().all(|s| s.properties == [("worker".to_owned(), "w1".to_owned())]));
        let failed = task_case("task-2".into(), task_status(TaskStatus::TimedOut), "timed out after 5 s\nmore".into());
        suites.push(hwsched_junit::Suite { name: "task-2".into(), properties: vec![], cases: vec![failed] });
        let xml = hwsched_junit::write("hwsched", &suites);
        let back = hwsched_junit::parse(xml.as_bytes()).expect("parses");
        let statuses: Vec<_> = back.iter().map(|c| (c.name.as_str(), c.status.as_str())).collect();
        assert_eq!(
            statuses,
            [("t1", "passed"), ("t3", "skipped"), ("t2", "failed"), ("t4", "passed"), ("task-2", "failed")]
        );
        assert_eq!(back[4].message, "timed out after 5 s");
    }

    #[test]
    fn a_task_case_says_how_it_ended_first_then_why() {
        let reasons = vec!["attempt 1 on w1 ended TASK_STATUS_FAILED".to_owned()];
        let m = super::outcome_message(TaskStatus::Failed, 3, &reasons);
        assert_eq!(m, "failed with exit code 3\nattempt 1 on w1 ended TASK_STATUS_FAILED");
        assert_eq!(super::outcome_message(TaskStatus::TimedOut, -1, &[]), "timed out");
        assert_eq!(super::outcome_message(TaskStatus::Succeeded, 0, &reasons), "");
    }

    #[test]
    fn task_ends_map_to_outcomes() {
        assert_eq!(task_status(TaskStatus::Succeeded), Status::Passed);
        assert_eq!(task_status(TaskStatus::Failed), Status::Failed);
        assert_eq!(task_status(TaskStatus::Cancelled), Status::Error);
    }
}
