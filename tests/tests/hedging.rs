//! Hedged stragglers with real monitors: an attempt running far past what
//! is expected of it gets a copy on the idle worker; the copy succeeds, the
//! straggler is stopped by its monitor and reported cancelled, and the task's
//! record says which copy won.

use std::time::Duration;

use futures::StreamExt;
use hwsched_client::Client;
use hwsched_config::NatsConfig;
use hwsched_proto::v1::{ExecutionResult, FailureCategory, TaskState, TaskStatus};
use hwsched_testkit::{eventually, NatsServer};
use hwsched_tests::{bus, monitor, sh_task, submit, InProcess};

const WAIT: Duration = Duration::from_secs(60);

/// A NATS server, a scheduler hedging as `hedge` says, two one-slot
/// monitors `w-a` and `w-b` (both registered), and a subscription to every result.
struct Farm {
    _nats: NatsServer,
    sched: InProcess,
    monitors: [InProcess; 2],
    client: Client,
    bus: hwsched_bus::Bus,
    results: async_nats::Subscriber,
}

impl Farm {
    async fn start(hedge: &str) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let url = nats.url();
        hwsched_bus::streams::provision(&bus(&url).await?).await?;
        let cfg = hwsched_scheduler::SchedulerConfig {
            worker_timeout_ms: 5_000,
            startup_grace_s: 0,
            hedge: hedge.parse().map_err(anyhow::Error::msg)?,
            ..Default::default()
        };
        let sched = InProcess::start(&url, |b, t, s| hwsched_scheduler::run(cfg, b, t, s)).await?;
        let monitors = [monitor(&url, "w-a", 1).await?, monitor(&url, "w-b", 1).await?];
        let client = Client::connect(&NatsConfig::new(&url)).await?;
        eventually(WAIT, || async { Ok((client.workers(Duration::from_millis(400)).await?.len() == 2).then_some(())) })
            .await?;
        let bus = bus(&url).await?;
        let results = bus.client().subscribe(bus.subjects().results_all()).await?;
        Ok(Self { _nats: nats, sched, monitors, client, bus, results })
    }

    async fn stop(self) -> anyhow::Result<()> {
        for m in self.monitors {
            m.stop().await?;
        }
        self.sched.stop().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_straggler_gives_one_success_and_one_superseded_copy() -> anyhow::Result<()> {
    let mut farm = Farm::start("share=1,factor=1.5,min_after_s=1").await?;
    let (client, results) = (&farm.client, &mut farm.results);
    // declared to take 1 s; its first attempt hangs wherever it runs, any later one is quick
    let mut t =
        sh_task("straggler", r#"if [ "$HWSCHED_ATTEMPT" = 1 ]; then sleep 120; fi; echo "done on $HWSCHED_WORKER_ID""#);
    t.expected_duration_s = 1.0;
    submit(&farm.bus, &t).await?;

    let mut seen: Vec<ExecutionResult> = Vec::new();
    while seen.len() < 2 {
        let m = tokio::time::timeout(WAIT, results.next())
            .await
            .map_err(|_| anyhow::anyhow!("results so far: {seen:#?}"))?
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
        seen.push(prost::Message::decode(m.payload.as_ref())?);
    }
    seen.sort_by_key(|r| r.attempt);
    let (straggler, copy) = (&seen[0], &seen[1]);
    assert_eq!((straggler.attempt, straggler.status()), (1, TaskStatus::Cancelled), "{seen:#?}");
    // stopped by the scheduler, not by a user
    assert_eq!(straggler.category(), FailureCategory::Superseded, "{straggler:?}");
    assert!(straggler.duration_s < 60.0, "stopped, not run to its end: {straggler:?}");
    assert_eq!((copy.attempt, copy.status()), (2, TaskStatus::Succeeded), "{seen:#?}");
    assert_ne!(copy.worker_id, straggler.worker_id, "the copy ran elsewhere");
    assert_eq!(copy.stdout_tail, format!("done on {}\n", copy.worker_id));
    // nothing else ends: exactly one success and one superseded copy
    let more = tokio::time::timeout(Duration::from_secs(2), results.next()).await;
    assert!(more.is_err(), "a third result: {more:?}");

    let rec = eventually(WAIT, || async {
        Ok(client.explain("straggler").await?.filter(|r| r.state() == TaskState::Succeeded))
    })
    .await?;
    assert_eq!((rec.worker_id.as_str(), rec.attempt, rec.hedges, rec.failures), (copy.worker_id.as_str(), 2, 1, 0));
    assert!(rec.hedge.is_none());
    let history: Vec<(u32, FailureCategory, &str)> =
        rec.history.iter().map(|h| (h.attempt, h.category(), h.worker_id.as_str())).collect();
    assert_eq!(
        history,
        [
            (1, FailureCategory::Superseded, straggler.worker_id.as_str()),
            (2, FailureCategory::Unspecified, copy.worker_id.as_str())
        ]
    );
    assert_eq!(rec.history[0].decision, format!("superseded: attempt 2 on {} ended first", copy.worker_id));
    assert_eq!(rec.history[1].decision, "succeeded first; its hedged twin was cancelled");
    farm.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hedging_off_a_straggler_runs_alone() -> anyhow::Result<()> {
    let mut farm = Farm::start("off").await?;
    let (client, results) = (&farm.client, &mut farm.results);
    let mut t = sh_task("slow", "sleep 4; echo done");
    t.expected_duration_s = 1.0;
    submit(&farm.bus, &t).await?;
    let m = tokio::time::timeout(WAIT, results.next()).await?.ok_or_else(|| anyhow::anyhow!("no result"))?;
    let r: ExecutionResult = prost::Message::decode(m.payload.as_ref())?;
    assert_eq!((r.attempt, r.status()), (1, TaskStatus::Succeeded), "{r:?}");
    let rec =
        eventually(WAIT, || async { Ok(client.explain("slow").await?.filter(|r| r.state() == TaskState::Succeeded)) })
            .await?;
    assert_eq!((rec.hedges, rec.history.len()), (0, 1));
    farm.stop().await
}
