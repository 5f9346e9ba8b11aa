//! Flaky tests told apart by revision, with real services (scheduler and
//! monitor in-process, the learner and the CLI as the real binary): a test
//! that fails its first attempt and passes its retry at one revision is
//! listed by `hwsched model flaky` with a suggested mute; a test that always
//! passes, one that always fails, and one that passed at revision A and failed
//! at B (a regression) are not.

use std::time::Duration;

use hwsched_testkit::NatsServer;
use hwsched_tests::{cli_async, cli_with_async, monitor, scheduler, Output, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// At one revision: fails its first attempt, passes its second (the monitor
/// numbers attempts in HWSCHED_ATTEMPT); always passes; always fails.
const SUITE: &str = r#"{"tasks": [
  {"task_id": "flaky-1", "name": "flaky-retry", "max_attempts": 3,
   "command": ["sh", "-c", "test \"$HWSCHED_ATTEMPT\" -ge 2"]},
  {"task_id": "pass-1", "name": "steady-pass", "command": ["true"]},
  {"task_id": "fail-1", "name": "steady-fail", "max_attempts": 2, "command": ["sh", "-c", "exit 1"]}
]}"#;

/// The same test, passing (at revision A) or failing (at revision B).
fn regression(id: &str, exit: u8) -> String {
    format!(
        r#"{{"tasks": [{{"task_id": "{id}", "name": "regress", "max_attempts": 1, "command": ["sh", "-c", "exit {exit}"]}}]}}"#
    )
}

/// Results the learner must have learned from: flaky-retry 2, steady-pass 1,
/// steady-fail 2, regress 1 + 1.
const RESULTS: u64 = 7;

async fn submit(
    url: &str,
    dir: &std::path::Path,
    file: &str,
    suite: &str,
    env: &[(&str, String)],
) -> anyhow::Result<Output> {
    let path = dir.join(file);
    std::fs::write(&path, suite)?;
    let path = path.to_str().unwrap_or_default().to_string();
    cli_with_async(url, &["submit", "-f", &path, "--wait", "--no-progress"], env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_test_that_passed_and_failed_at_one_revision_is_flaky() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-flaky", 2).await?;
    let learner = Proc::spawn("learner", &url, &["learner"], &[("HWSCHED_LEARNER_PUBLISH_MS", "200".into())])?;
    learner.wait_for_log("learner ready", WAIT).await?;
    let dir = tempfile::tempdir()?;
    // blank: the revision comes from --revision, else from the CI variables
    let blank: Vec<(&str, String)> =
        ["HWSCHED_REVISION", "GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "GIT_COMMIT"]
            .map(|k| (k, String::new()))
            .to_vec();

    let path = dir.path().join("suite.json");
    std::fs::write(&path, SUITE)?;
    let args = ["submit", "-f", path.to_str().unwrap_or_default(), "--wait", "--no-progress", "--revision", "rev-1"];
    let out = cli_with_async(&url, &args, &blank).await?;
    assert_eq!(out.code, 1, "steady-fail failed:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("3 task(s): 2 succeeded, 1 failed"), "{}", out.stdout);
    // the regression: passed at rev-a (--revision), failed at rev-b (a CI's GITHUB_SHA)
    let out = submit(
        &url,
        dir.path(),
        "a.json",
        &regression("regress-a", 0),
        &[&blank[..], &[("HWSCHED_REVISION", "rev-a".into())]].concat(),
    )
    .await?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // (a later variable wins over the blank one)
    let ci = [&blank[..], &[("GITHUB_SHA", "rev-b".into())]].concat();
    let out = submit(&url, dir.path(), "b.json", &regression("regress-b", 1), &ci).await?;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);

    // once the learner has published a model with every result
    let json: serde_json::Value = hwsched_testkit::eventually(WAIT, || async {
        let out = cli_async(&url, &["model", "flaky", "-o", "json"]).await?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        Ok((v["version"].as_u64().unwrap_or(0) >= RESULTS).then_some(v))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nlearner:\n{}", learner.log()))?;
    let flaky = json["flaky_tests"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = flaky.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["flaky-retry"], "{json:#}");
    let t = &flaky[0];
    assert_eq!(t["workloadKey"], "-/-/flaky-retry", "{t:#}");
    assert_eq!((t["mixedRevisions"].as_u64(), t["revisions"].as_u64()), (Some(1), Some(1)), "{t:#}");
    // proto3 JSON writes 64-bit integers as strings
    assert_eq!((t["attempts"].as_str(), t["failures"].as_str()), (Some("2"), Some("1")), "{t:#}");
    assert_eq!(t["lastRevision"], "rev-1");
    // (1 + 1) / (2 + 2)
    assert!((t["flakeRate"].as_f64().unwrap_or(0.0) - 0.5).abs() < 1e-9, "{t:#}");
    let expected = "hwsched mute add --test 'flaky-retry' --for 7d \
                    --reason 'flaky: failed 1 of 2 at rev rev-1 (est. 50% per attempt)'";
    assert_eq!(t["suggestedMute"], expected, "{t:#}");

    // the same for people, and nothing was muted
    let out = cli_async(&url, &["model", "flaky"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("1 flaky test(s)"), "{}", out.stdout);
    assert!(out.stdout.lines().any(|l| l.starts_with("-/-/flaky-retry") && l.contains("50%")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("suggested: {expected}")), "{}", out.stdout);
    for other in ["steady-pass", "steady-fail", "regress"] {
        assert!(!out.stdout.contains(other), "{other} listed:\n{}", out.stdout);
    }
    let mutes = cli_async(&url, &["mute", "list"]).await?;
    assert!(mutes.stdout.contains("(no mute in force)"), "{}", mutes.stdout);
    mon.stop().await?;
    sched.stop().await
}
