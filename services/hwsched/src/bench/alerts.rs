//! `hwsched bench alerts`: sample publish → alert notification latency against
//! a running alerting service whose rules include `bench.value > 50` with
//! `for: 0s` (`scripts/bench-alerts.sh` starts one). Each round, every
//! simulated worker publishes one sample that crosses the threshold (up on
//! even rounds, down on odd ones), so each sample causes exactly one
//! transition (firing, then resolved); the latency is from the sample's
//! publish to the alert's arrival on `hws.alerts.>` and, with
//! `--webhook-listen`, to the webhook notification that carries it (the
//! alerting service must post to that address: `--webhook http://ADDR/`).
//! Rounds closer together than the route's group interval are batched by
//! design; space them wider to measure the latency of each transition.

use std::{collections::HashMap, time::Duration};

use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, Bus};
use hwsched_proto::{
    v1::{Alert, AlertState, MetricSample, MetricsBatch},
    Message,
};

use crate::bench::shared::run_id;

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Rounds (each: one sample per worker, one transition each).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Pause between rounds, ms.
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Receive the webhook notifications on this address and measure up to them.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<std::net::SocketAddr>,
}

/// Serves `POST /` and hands each JSON body over, with its arrival time.
async fn webhook_receiver(
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, serde_json::Value)>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let at = std::time::Instant::now();
                if let Ok(v) = serde_json::from_slice(&body) {
                    let _ = tx.send((at, v));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(rx)
}

fn quantiles(what: &str, mut latencies: Vec<f64>) {
    if latencies.is_empty() {
        return;
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} transitions)",
        q(0.5),
        q(0.99),
        q(1.0),
        latencies.len()
    );
}

pub async fn run(bus: &Bus, args: AlertsArgs) -> anyhow::Result<()> {
    let mut alerts = bus.client().subscribe(bus.subjects().alerts_all()).await?;
    let run_id = run_id();
    let ids: Vec<String> = (0..args.workers).map(|i| format!("bench-{run_id}-a{i:04}")).collect();
    let mut hooks = match args.webhook_listen {
        Some(addr) => Some(webhook_receiver(addr).await?),
        None => None,
    };
    let mut sent: HashMap<(String, bool), std::time::Instant> = HashMap::new();
    let mut hook_sent: HashMap<(String, bool), std::time::Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(args.workers * args.rounds);
    let mut hook_latencies = Vec::with_capacity(args.workers * args.rounds);
    for round in 0..args.rounds {
        let up = round % 2 == 0;
        for id in &ids {
            let batch = MetricsBatch {
                schema_version: hwsched_proto::SCHEMA_VERSION,
                worker_id: id.clone(),
                timestamp_ms: now_ms(),
                samples: vec![MetricSample {
                    metric: "bench.value".into(),
                    device: "bench".into(),
                    value: if up { 100.0 } else { 0.0 },
                }],
            };
            sent.insert((id.clone(), up), std::time::Instant::now());
            if hooks.is_some() {
                hook_sent.insert((id.clone(), up), std::time::Instant::now());
            }
            bus.client().publish(bus.subjects().metrics(id), batch.encode_to_vec().into()).await?;
        }
        bus.client().flush().await?;
        // collect this round's transitions
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < ids.len() {
            let Ok(Some(m)) = tokio::time::timeout_at(deadline, alerts.next()).await else { break };
            let Ok(a) = Alert::decode(m.payload.as_ref()) else { continue };
            let firing = a.state() == AlertState::Firing;
            if let Some(at) = sent.remove(&(a.worker_id.clone(), firing)) {
                latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                got += 1;
            }
        }
        anyhow::ensure!(
            got == ids.len(),
            "round {round}: {got} of {} transitions notified within 10 s (is `hwsched alerting` running with the bench rule?)",
            ids.len()
        );
        if let Some(rx) = hooks.as_mut() {
            let mut got = 0;
            while got < ids.len() {
                let Ok(Some((at, body))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
                for a in body["alerts"].as_array().into_iter().flatten() {
                    let worker = a["labels"]["worker_id"].as_str().unwrap_or_default().to_string();
                    let firing = a["status"] == "firing";
                    if let Some(t) = hook_sent.remove(&(worker, firing)) {
                        hook_latencies.push(at.duration_since(t).as_secs_f64() * 1000.0);
                        got += 1;
                    }
                }
            }
            anyhow::ensure!(
                got == ids.len(),
                "round {round}: {got} of {} transitions reached the webhook within 10 s (does alerting post to --webhook-listen?)",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    println!("workers {}, rounds {}", args.workers, args.rounds);
    quantiles("sample publish -> alert on hws.alerts", latencies);
    quantiles("sample publish -> webhook notification", hook_latencies);
    Ok(())
}
