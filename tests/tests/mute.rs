//! `hwsched mute` against real services: a muted failing test leaves
//! `submit --wait` at exit 0 and says which mute covered it; the same
//! failure counts again once the mute has ended.

use hwsched_testkit::NatsServer;
use hwsched_tests::{cli_async, monitor, scheduler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_failing_test_does_not_fail_the_wait_until_the_mute_ends() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let _sched = scheduler(&url).await?;
    let _mon = monitor(&url, "w-mute", 2).await?;

    let refused = cli_async(&url, &["mute", "add", "--test", "*", "--reason", "noise"]).await?;
    assert_eq!(refused.code, 2, "a mute of everything is refused: {}{}", refused.stdout, refused.stderr);
    let no_reason = cli_async(&url, &["mute", "add", "--test", "net-*"]).await?;
    assert_ne!(no_reason.code, 0, "a reason is required");

    let added =
        cli_async(&url, &["mute", "add", "--test", "net-*", "--for", "2d", "--reason", "upstream mirror flaps"])
            .await?;
    assert_eq!(added.code, 0, "{}", added.stderr);
    let id = added.stdout.trim().to_string();
    let listed = cli_async(&url, &["mute", "list"]).await?;
    assert!(listed.stdout.contains(&id) && listed.stdout.contains("net-*"), "{}", listed.stdout);

    let fail = |task: &str, name: &str| {
        ["submit", "--id", task, "--name", name, "--wait", "--", "sh", "-c", "exit 4"].map(String::from).to_vec()
    };
    let args = fail("m-1", "net-download");
    let out = cli_async(&url, &args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    assert_eq!(out.code, 0, "muted: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("finished failed"), "still reported: {}", out.stdout);
    assert!(
        out.stdout.contains(&format!("failure muted by \"net-*\" ({id}"))
            && out.stdout.contains("upstream mirror flaps"),
        "says why: {}",
        out.stdout
    );
    assert!(out.stdout.contains("1 task(s): 0 succeeded, 0 failed, 1 failed but muted"), "{}", out.stdout);

    let other = fail("m-2", "disk-io");
    let out = cli_async(&url, &other.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    assert_eq!(out.code, 1, "an unmuted failure fails: {}", out.stdout);

    let ended = cli_async(&url, &["mute", "end", &id]).await?;
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let again = fail("m-3", "net-download");
    let out = cli_async(&url, &again.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    assert_eq!(out.code, 1, "the mute ended: {}", out.stdout);
    assert!(!out.stdout.contains("muted by"), "{}", out.stdout);
    Ok(())
}
