//! The binary's contract with a user who got something wrong: configuration is
//! validated before anything connects, and an unreachable NATS is named.

use std::process::Command;

use hwsched_tests::hwsched_bin;

fn run(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(hwsched_bin()?).args(args).env_remove("HWSCHED_NATS_URL").output()?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn invalid_configuration_is_rejected_before_connecting_and_names_the_field() -> anyhow::Result<()> {
    let (code, err) = run(&["--nats-url", "127.0.0.1:4222", "scheduler"])?;
    assert_eq!(code, 1);
    assert!(err.contains("HWSCHED_NATS_URL"), "{err}");
    let (code, err) = run(&["--subject-prefix", "a.*", "monitor"])?;
    assert_eq!(code, 1);
    assert!(err.contains("HWSCHED_SUBJECT_PREFIX"), "{err}");
    let (code, err) = run(&["--clickhouse-database", "my-db", "recorder"])?;
    assert_eq!(code, 1);
    assert!(err.contains("HWSCHED_CLICKHOUSE_DATABASE"), "{err}");
    // nothing listens on port 1: the error must come before any connection attempt
    let (code, err) = run(&["--nats-url", "nats://127.0.0.1:1", "monitor", "--worker-id", "has.dot"])?;
    assert_eq!(code, 1);
    assert!(err.contains("HWSCHED_WORKER_ID"), "{err}");
    Ok(())
}

#[test]
fn unreachable_nats_is_reported_with_the_url() -> anyhow::Result<()> {
    // port 1 on loopback: nothing listens there
    let (code, err) = run(&["--nats-url", "nats://127.0.0.1:1", "submit", "--", "true"])?;
    assert_eq!(code, 1);
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
