//! The binary's contract with a user who got something wrong: configuration is
//! validated before anything connects (exit 2), an unreachable NATS is named
//! (exit 3), and so is a suite file's bad field (exit 2).

use std::process::Command;

use hwsched_tests::hwsched_bin;

fn run(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(hwsched_bin()?).args(args).env_remove("HWSCHED_NATS_URL").output()?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn invalid_configuration_is_rejected_before_connecting_and_names_the_field() -> anyhow::Result<()> {
    let (code, err) = run(&["--nats-url", "127.0.0.1:4222", "scheduler"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HWSCHED_NATS_URL"), "{err}");
    let (code, err) = run(&["--subject-prefix", "a.*", "monitor"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HWSCHED_SUBJECT_PREFIX"), "{err}");
    let (code, err) = run(&["--clickhouse-database", "my-db", "recorder"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HWSCHED_CLICKHOUSE_DATABASE"), "{err}");
    // nothing listens on port 1: the error must come before any connection attempt
    let (code, err) = run(&["--nats-url", "nats://127.0.0.1:1", "monitor", "--worker-id", "has.dot"])?;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HWSCHED_WORKER_ID"), "{err}");
    Ok(())
}

#[test]
fn unreachable_nats_is_reported_with_the_url() -> anyhow::Result<()> {
    // port 1 on loopback: nothing listens there
    let (code, err) = run(&["--nats-url", "nats://127.0.0.1:1", "submit", "--", "true"])?;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot connect to NATS at nats://127.0.0.1:1"), "{err}");
    assert!(err.contains("HWSCHED_NATS_URL"), "{err}");
    Ok(())
}

#[test]
fn secrets_do_not_appear_in_help() -> anyhow::Result<()> {
    let out = Command::new(hwsched_bin()?)
        .args(["scheduler", "--help"])
        .env("HWSCHED_NATS_PASSWORD", "s3cr3t-value")
        .env("HWSCHED_CLICKHOUSE_PASSWORD", "other-s3cr3t")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--nats-password"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    Ok(())
}

#[test]
fn a_bad_suite_file_names_file_line_and_field_before_connecting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("suite.yaml");
    std::fs::write(&path, "tasks:\n  - command: [pytest, a.py]\n  - command: [pytest, b.py]\n    requirements:\n      gpus: {count: two}\n")?;
    // port 1: it must fail on the file, not on the connection
    let (code, err) = run(&["--nats-url", "nats://127.0.0.1:1", "submit", "-f", path.to_str().unwrap_or_default()])?;
    assert_eq!(code, 2, "{err}");
    let want = format!("{}:5:", path.display());
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("tasks[1].requirements.gpus.count"), "{err}");
    Ok(())
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_codes() -> anyhow::Result<()> {
    let (code, err) = run(&["submit", "--priority", "high", "--", "true"])?;
    assert_eq!(code, 2, "{err}");
    let out = Command::new(hwsched_bin()?).arg("--help").output()?;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["submit", "workers", "queue", "tasks", "watch", "explain", "cancel", "drain", "completions"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(cmd)), "{cmd} missing from --help:\n{help}");
    }
    assert!(help.contains("3 NATS or a service unreachable"), "{help}");
    Ok(())
}

#[test]
fn completions_are_generated_for_each_shell() -> anyhow::Result<()> {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef hwsched"), ("fish", "complete -c hwsched")] {
        let out = Command::new(hwsched_bin()?).args(["completions", shell]).output()?;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {}", &text[..text.len().min(300)]);
        assert!(text.contains("drain") && text.contains("submit"), "{shell} completes the subcommands");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_do_not_appear_in_logs_or_errors() -> anyhow::Result<()> {
    // credentials in a URL: the error names the URL without them
    let (code, err) = run(&["--nats-url", "nats://hw:url-s3cr3t@127.0.0.1:1", "queue"])?;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nats://***@127.0.0.1:1") && !err.contains("url-s3cr3t"), "{err}");
    // a service at debug level, its ClickHouse unreachable, its passwords set
    let nats = hwsched_testkit::NatsServer::start()?;
    let mut recorder = hwsched_tests::Proc::spawn(
        "recorder",
        &nats.url(),
        &["recorder", "--log", "debug", "--log-format", "json"],
        &[
            ("HWSCHED_CLICKHOUSE_URL", "http://ch-user:ch-url-s3cr3t@127.0.0.1:1".into()),
            ("HWSCHED_CLICKHOUSE_USER", "ch-user".into()),
            ("HWSCHED_CLICKHOUSE_PASSWORD", "ch-pa55-s3cr3t".into()),
        ],
    )?;
    recorder.wait_for_log("ClickHouse", std::time::Duration::from_secs(30)).await?;
    let _ = recorder.terminate(std::time::Duration::from_secs(15)).await;
    let log = recorder.log();
    assert!(log.contains("127.0.0.1:1"), "the log says which ClickHouse: {log}");
    for secret in ["ch-url-s3cr3t", "ch-pa55-s3cr3t"] {
        assert!(!log.contains(secret), "{secret} in the recorder's log:\n{log}");
    }
    Ok(())
}
