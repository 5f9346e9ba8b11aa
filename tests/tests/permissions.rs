//! The shipped NATS permissions (`hwsched nats-auth`, `deploy/nats/`) on a
//! real nats-server: every service runs with its own user and a task goes
//! from a producer to a worker and back; and the server refuses what a role
//! must not do: a producer publishing an assignment or a result, a monitor
//! publishing another worker's metrics or results or any assignment or writing a bundle, a monitor reading
//! another's inbox or assignments. The shipped `deploy/nats/hwsched-auth.conf`
//! (the Kubernetes deployment's: one shared monitor user) is what the command renders.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use hwsched_testkit::NatsServer;
use hwsched_tests::{hwsched_bin, Output, Proc};

const USERS: [&str; 9] =
    ["scheduler", "learner", "alerting", "recorder", "producer", "operator", "monitor", "w-a", "w-b"];

struct Secured {
    nats: NatsServer,
    passwords: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl Secured {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("auth.conf");
        let out = std::process::Command::new(hwsched_bin()?)
            .args(["nats-auth", "--worker", "w-a", "--worker", "w-b", "--shared-monitor"])
            .output()?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(&conf, &out.stdout)?;
        let passwords: HashMap<String, String> =
            USERS.iter().map(|u| (u.to_string(), format!("pw-{u}-{}", std::process::id()))).collect();
        let env: Vec<(String, String)> = passwords
            .iter()
            .map(|(u, p)| (format!("HWSCHED_NATS_PASSWORD_{}", u.to_uppercase().replace('-', "_")), p.clone()))
            .collect();
        Ok(Self { nats: NatsServer::start_with_config(&conf, &env)?, passwords, _dir: dir })
    }

    fn env(&self, user: &str) -> Vec<(&'static str, String)> {
        vec![("HWSCHED_NATS_USER", user.to_string()), ("HWSCHED_NATS_PASSWORD", self.passwords[user].clone())]
    }

    /// `hwsched <args>` as `user`.
    async fn cli(&self, user: &str, args: &[&str]) -> anyhow::Result<Output> {
        hwsched_tests::cli_with_async(&self.nats.url(), args, &self.env(user)).await
    }

    /// A raw connection as `user`, with the server's refusals on the receiver.
    async fn connect(
        &self,
        user: &str,
    ) -> anyhow::Result<(async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .user_and_password(user.into(), self.passwords[user].clone())
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .event_callback(move |e| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = e {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(self.nats.url())
            .await?;
        Ok((client, rx))
    }
}

/// The next refusal the server sent, which must name `subject`.
async fn refused(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) -> anyhow::Result<()> {
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?.unwrap_or_default();
    anyhow::ensure!(
        e.contains("Permissions Violation") && e.contains(subject),
        "expected a refusal of {subject}, got {e:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_and_nothing_else() -> anyhow::Result<()> {
    let s = Secured::start()?;
    let url = s.nats.url();
    let sched = Proc::spawn("scheduler", &url, &["scheduler", "--startup-grace-s", "0"], &s.env("scheduler"))?;
    sched.wait_for_log("scheduler ready", Duration::from_secs(30)).await?;
    let mon =
        Proc::spawn("monitor w-a", &url, &["monitor", "--worker-id", "w-a", "--interval-ms", "200"], &s.env("w-a"))?;
    mon.wait_for_log("monitor ready", Duration::from_secs(30)).await?;

    // a producer submits and follows a task to its end with its live output, and reads its history
    let out =
        s.cli("producer", &["submit", "--id", "secure-1", "--wait", "--logs", "--", "echo", "secure-out"]).await?;
    assert_eq!(out.code, 0, "{}{}\nscheduler:\n{}\nmonitor:\n{}", out.stdout, out.stderr, sched.log(), mon.log());
    assert!(out.stdout.contains("finished succeeded on w-a"), "{}", out.stdout);
    assert!(out.stdout.contains("[secure-1] secure-out"), "{}", out.stdout);
    assert!(!out.stderr.contains("muted tests not read"), "a producer reads the mutes: {}", out.stderr);
    // its stored and live output, and its (empty) list of artifacts
    for args in [&["logs", "secure-1"][..], &["logs", "secure-1", "-f"], &["artifacts", "secure-1"]] {
        let out = s.cli("producer", args).await?;
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(args[0] == "artifacts" || out.stdout == "secure-out\n", "{args:?}: {}", out.stdout);
    }
    let out = s.cli("producer", &["tasks", "secure-1"]).await?;
    assert!(
        out.stdout.lines().any(|l| l.contains(" succeeded ") && l.contains(" w-a ")),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // a producer uploads a bundle and the worker reads it (its user may read the bundle store)
    let code = tempfile::tempdir()?;
    std::fs::write(code.path().join("data.txt"), "shipped")?;
    let dir = code.path().display().to_string();
    let out = s
        .cli("producer", &["submit", "--id", "secure-bundle", "--bundle", &dir, "--wait", "--", "cat", "data.txt"])
        .await?;
    assert_eq!(out.code, 0, "{}{}\nmonitor:\n{}", out.stdout, out.stderr, mon.log());
    assert!(out.stderr.contains("uploaded"), "{}", out.stderr);
    // an operator drains and undrains the worker
    let out = s.cli("operator", &["drain", "w-a"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = s.cli("operator", &["undrain", "w-a"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // a producer may not drain
    let out = s.cli("producer", &["drain", "w-a"]).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    // an operator mutes a test, a producer may read mutes but not add one
    let mute = ["mute", "add", "--test", "flaky-*", "--reason", "tracked in #12"];
    let out = s.cli("operator", &mute).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = s.cli("producer", &["mute", "list"]).await?;
    assert!(out.code == 0 && out.stdout.contains("flaky-*"), "{}{}", out.stdout, out.stderr);
    let out = s.cli("producer", &mute).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    // a wrong password is refused, and the error does not repeat it
    let mut cmd = std::process::Command::new(hwsched_bin()?);
    cmd.args(["queue"])
        .env("HWSCHED_NATS_URL", &url)
        .env("HWSCHED_NATS_USER", "producer")
        .env("HWSCHED_NATS_PASSWORD", "wrong-s3cr3t");
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot connect to NATS") && !err.contains("wrong-s3cr3t"), "{err}");
    for (name, log) in [("scheduler", sched.log()), ("monitor", mon.log())] {
        assert!(!log.contains("Permissions Violation"), "{name} was refused something it needs:\n{log}");
    }

    // refusals, seen by an operator listening to everything
    let (op, _) = s.connect("operator").await?;
    let mut seen = op.subscribe("hws.>").await?;
    op.flush().await?;
    let (producer, mut producer_errors) = s.connect("producer").await?;
    for subject in ["hws.assign.w-a", "hws.results.w-a.secure-1", "hws.metrics.w-a", "hws.deadletter.recorder"] {
        producer.publish(subject, "forged".into()).await?;
        refused(&mut producer_errors, subject).await?;
    }
    let (wa, mut wa_errors) = s.connect("w-a").await?;
    for subject in [
        "hws.metrics.w-b",
        "hws.results.w-b.secure-1",
        "hws.assign.w-b",
        "hws.workers.w-b.heartbeat",
        "hws.tasks.submit",
        // dead letters in another's name
        "hws.deadletter.w-b",
        "hws.deadletter.scheduler",
        // a worker reads bundles, never writes them
        "$O.hws_bundles.C.forged",
        "$O.hws_bundles.M.forged",
    ] {
        wa.publish(subject, "forged".into()).await?;
        refused(&mut wa_errors, subject).await?;
    }
    // its own metrics go through
    wa.publish("hws.metrics.w-a", "own".into()).await?;
    wa.flush().await?;
    let m = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = seen.next().await.expect("subscription");
            if m.payload.as_ref() != b"forged"
                && m.subject.as_str() == "hws.metrics.w-a"
                && m.payload.as_ref() == b"own"
            {
                return m;
            }
            assert_ne!(m.payload.as_ref(), b"forged", "a forged message got through on {}", m.subject);
        }
    })
    .await?;
    assert_eq!(m.subject.as_str(), "hws.metrics.w-a");
    // nor may it read another worker's assignments or inbox
    for subject in ["hws.assign.>", "_INBOX_w-b.>", "_INBOX_scheduler.>"] {
        let _sub = wa.subscribe(subject).await?;
        refused(&mut wa_errors, subject).await?;
    }
    // and only the scheduler publishes assignments (the shared monitor user neither)
    let (learner, mut learner_errors) = s.connect("learner").await?;
    learner.publish("hws.assign.w-a", "forged".into()).await?;
    refused(&mut learner_errors, "hws.assign.w-a").await?;
    let (shared, mut shared_errors) = s.connect("monitor").await?;
    for subject in ["hws.assign.w-a", "hws.tasks.submit", "hws.control.queue"] {
        shared.publish(subject, "forged".into()).await?;
        refused(&mut shared_errors, subject).await?;
    }
    Ok(())
}

#[test]
fn the_shipped_example_configuration_is_what_nats_auth_renders() -> anyhow::Result<()> {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nats/hwsched-auth.conf"))?;
    let out = std::process::Command::new(hwsched_bin()?).args(["nats-auth", "--shared-monitor"]).output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped, "re-render deploy/nats/hwsched-auth.conf");
    Ok(())
}
