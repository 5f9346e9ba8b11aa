//! `hwsched report` against the real ClickHouse `make test` starts (18.16):
//! metrics, task runs and alerts stored through the store, the report read
//! back as JSON (numbers as inserted, the window applied, redelivered rows
//! counted once) and as HTML, which headless Chromium renders (screenshot) and
//! parses (DOM) with a hostile task name shown as text, never as markup.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hwsched_proto::v1::{
    Alert, AlertState, ExecutionResult, FailureCategory, MetricSample, MetricsBatch, ResourceUsage, TaskStatus,
};
use hwsched_store::Store;
use hwsched_testkit::TestDb;
use serde_json::Value;

const EVIL: &str = "<b>bold</b> & \"quotes\"";
const HOUR_MS: i64 = 3_600_000;

fn batch(worker: &str, at_ms: i64, samples: &[(&str, &str, f64)]) -> MetricsBatch {
    MetricsBatch {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        worker_id: worker.into(),
        timestamp_ms: at_ms,
        samples: samples
            .iter()
            .map(|(metric, device, value)| MetricSample {
                metric: (*metric).into(),
                device: (*device).into(),
                value: *value,
            })
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    task: &str,
    name: &str,
    worker: &str,
    class: &str,
    status: TaskStatus,
    secs: f64,
    finished_ms: i64,
    usage: ResourceUsage,
) -> ExecutionResult {
    ExecutionResult {
        task_id: task.into(),
        attempt: 1,
        name: name.into(),
        test_type: "unit".into(),
        worker_id: worker.into(),
        hardware_class: class.into(),
        status: status as i32,
        duration_s: secs,
        started_at_ms: finished_ms - (secs * 1000.0) as i64,
        finished_at_ms: finished_ms,
        resources: Some(usage),
        ..Default::default()
    }
}

fn usage(cpu_avg: f64, cpu_peak: f64, mem_mb: u64, gpu_mem_mb: u64) -> ResourceUsage {
    ResourceUsage {
        cpu_avg_pct: cpu_avg,
        cpu_peak_pct: cpu_peak,
        memory_peak_mb: mem_mb,
        gpu_memory_peak_mb: gpu_mem_mb,
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn alert(fp: &str, rule: &str, severity: &str, worker: &str, state: AlertState, starts: i64, ends: i64) -> Alert {
    Alert {
        fingerprint: fp.into(),
        rule: rule.into(),
        severity: severity.into(),
        state: state as i32,
        worker_id: worker.into(),
        device: "cpu".into(),
        metric: "cpu.util_pct".into(),
        value: 97.0,
        threshold: 90.0,
        starts_at_ms: starts,
        ends_at_ms: ends,
        at_ms: if state == AlertState::Resolved { ends } else { starts },
        summary: format!("{rule} on {worker}"),
        ..Default::default()
    }
}

/// Stores a small fleet's last hour (and some older rows the 24h window must leave out).
async fn seed(store: &Store) -> anyhow::Result<()> {
    // whole seconds: the 18.16 server stores DateTime in seconds
    let now = hwsched_bus::now_ms() / 1000 * 1000;
    let old = now - 48 * HOUR_MS;
    let at = |minutes_ago: i64| now - minutes_ago * 60_000;

    let mut metrics = Vec::new();
    for (i, cpu) in [10.0, 20.0, 30.0, 40.0, 95.5].into_iter().enumerate() {
        let t = at(50 - 10 * i as i64);
        // the per-core sample is not the machine's CPU: left out of the utilization
        metrics.push(batch("w-cpu-1", t, &[("cpu.util_pct", "cpu", cpu), ("cpu.util_pct", "cpu0", 100.0)]));
    }
    metrics.push(batch("w-cpu-1", at(45), &[("mem.used_pct", "mem", 50.0)]));
    metrics.push(batch("w-cpu-1", at(15), &[("mem.used_pct", "mem", 60.0)]));
    metrics.push(batch(
        "w-gpu-1",
        at(40),
        &[
            ("cpu.util_pct", "cpu", 5.0),
            ("gpu.util_pct", "gpu0", 80.0),
            ("gpu.temp_c", "gpu0", 70.0),
            ("gpu.mem_used_pct", "gpu0", 40.0),
        ],
    ));
    metrics.push(batch(
        "w-gpu-1",
        at(20),
        &[("cpu.util_pct", "cpu", 15.0), ("gpu.util_pct", "gpu0", 90.0), ("gpu.temp_c", "gpu0", 75.0)],
    ));
    // outside the window
    metrics.push(batch("w-cpu-1", old, &[("cpu.util_pct", "cpu", 100.0)]));
    metrics.push(batch("w-old", old, &[("cpu.util_pct", "cpu", 50.0)]));
    store.insert_metrics(&metrics).await?;

    let ok1 = run(
        "t-ok-1",
        "suite.fast",
        "w-cpu-1",
        "cpu:x86_64",
        TaskStatus::Succeeded,
        10.0,
        at(40),
        usage(40.0, 80.0, 512, 0),
    );
    // stopped copies of suite.fast, long: their durations are not the test's
    let stopped = |task: &str, category: FailureCategory| ExecutionResult {
        category: category as i32,
        ..run(task, "suite.fast", "w-cpu-1", "cpu:x86_64", TaskStatus::Cancelled, 400.0, at(45), usage(0.0, 0.0, 1, 0))
    };
    let runs = vec![
        ok1.clone(),
        run(
            "t-ok-2",
            "suite.fast",
            "w-cpu-1",
            "cpu:x86_64",
            TaskStatus::Succeeded,
            20.0,
            at(30),
            usage(45.0, 85.0, 640, 0),
        ),
        run(
            "t-evil",
            EVIL,
            "w-gpu-1",
            "gpu:h100",
            TaskStatus::Succeeded,
            70.5,
            at(25),
            usage(20.0, 35.0, 4096, 30_000),
        ),
        ExecutionResult {
            exit_code: 3,
            error: "assertion failed: x < y & z".into(),
            ..run(
                "t-fail",
                "suite.flaky",
                "w-cpu-1",
                "cpu:x86_64",
                TaskStatus::Failed,
                5.0,
                at(20),
                usage(10.0, 20.0, 128, 0),
            )
        },
        ExecutionResult {
            exit_code: -1,
            error: "timed out after 300s".into(),
            ..run(
                "t-slow",
                "suite.slow",
                "w-gpu-1",
                "gpu:h100",
                TaskStatus::TimedOut,
                300.0,
                at(10),
                usage(90.0, 99.0, 8192, 1000),
            )
        },
        // cancelled by a user, and a hedged copy the scheduler stopped: not failures, counted apart
        stopped("t-cancel", FailureCategory::Cancelled),
        stopped("t-hedged", FailureCategory::Superseded),
        // outside the window
        run("t-old", "suite.fast", "w-old", "cpu:x86_64", TaskStatus::Failed, 1.0, old, usage(1.0, 1.0, 1, 0)),
    ];
    store.insert_runs(&runs).await?;
    // a redelivered result: the same attempt again, counted once (FINAL)
    store.insert_runs(&[ok1]).await?;

    let fired = alert("fp-cpu", "HighCpu", "warning", "w-cpu-1", AlertState::Firing, at(30), 0);
    store
        .insert_alerts(&[
            fired.clone(),
            alert("fp-cpu", "HighCpu", "warning", "w-cpu-1", AlertState::Resolved, at(30), at(20)),
            alert("fp-gpu", "GpuHot", "critical", "w-gpu-1", AlertState::Firing, at(15), 0),
            // resolved two days ago: not in the window
            alert("fp-old", "HighCpu", "warning", "w-old", AlertState::Firing, old - HOUR_MS, 0),
            alert("fp-old", "HighCpu", "warning", "w-old", AlertState::Resolved, old - HOUR_MS, old),
        ])
        .await?;
    // a redelivered transition
    store.insert_alerts(&[fired]).await?;
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|x| x[key] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_the_window_as_json_and_html_that_chromium_renders() -> anyhow::Result<()> {
    // fail, not skip, when the browser is missing: the HTML must be checked
    let browser = chromium().context(
        "headless Chromium is needed to check the HTML report: neither `chromium` nor `chromium-browser` is on PATH \
         (install Debian's `chromium` package; scripts/setup-env.sh does when run as root)",
    )?;
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    store.migrate(&db.config).await?;
    seed(&store).await?;

    let dir = tempfile::tempdir()?;
    let (html_path, json_path) = (dir.path().join("report.html"), dir.path().join("report.json"));
    let out = Command::new(hwsched_tests::hwsched_bin()?)
        .args(["--clickhouse-url", db.config.url.as_deref().unwrap_or_default()])
        .args(["--clickhouse-database", &db.config.database])
        .args(["report", "--since", "24h", "--html"])
        .arg(&html_path)
        .arg("--json")
        .arg(&json_path)
        .env_remove("HWSCHED_CLICKHOUSE_URL")
        .env_remove("HWSCHED_CLICKHOUSE_DATABASE")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "hwsched report failed: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("last 24h: 2 workers, 7 task runs"), "{stdout}");
    assert!(stdout.contains("1 cancelled, 1 hedged copies stopped"), "{stdout}");

    // JSON: what was inserted, within the window, each attempt once
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
    assert_eq!(r["window_s"], 86_400);
    assert_eq!(r["server_version"].as_str().map(|v| v.starts_with("18.")), Some(true), "{}", r["server_version"]);
    let s = &r["summary"];
    assert_eq!(s["workers_seen"], 2, "{s}");
    assert_eq!(s["tasks_run"], 7, "{s}");
    assert_eq!(s["succeeded"], 3, "{s}");
    assert_eq!(s["failed"], 2, "{s}");
    assert_eq!((s["cancelled"].as_u64(), s["superseded"].as_u64()), (Some(1), Some(1)), "{s}");
    assert!((f(&s["success_rate"]) - 0.6).abs() < 1e-9, "{s}");
    // the hardware time of stopped copies is counted here, not in the durations below
    assert!((f(&s["total_task_time_s"]) - 1205.5).abs() < 1e-9, "{s}");
    assert_eq!(s["alerts_fired"], 2, "{s}");

    let util = &r["utilization"];
    assert_eq!(util.as_array().map(Vec::len), Some(2), "{util}");
    let w1 = find(util, "worker_id", "w-cpu-1").context("w-cpu-1 utilization")?;
    let cpu = find(&w1["metrics"], "metric", "cpu.util_pct").context("w-cpu-1 cpu")?;
    assert_eq!(cpu["device"], "cpu", "per-core samples left out: {w1}");
    assert_eq!(cpu["samples"], 5);
    assert_eq!(f(&cpu["max"]), 95.5, "the worker's max CPU in the window");
    assert_eq!(f(&cpu["min"]), 10.0);
    assert!((f(&cpu["avg"]) - 39.1).abs() < 1e-9, "{cpu}");
    assert!(f(&cpu["p95"]) > 40.0 && f(&cpu["p95"]) <= 95.5, "{cpu}");
    let mem = find(&w1["metrics"], "metric", "mem.used_pct").context("w-cpu-1 mem")?;
    assert_eq!((f(&mem["min"]), f(&mem["avg"]), f(&mem["max"])), (50.0, 55.0, 60.0));
    let w2 = find(util, "worker_id", "w-gpu-1").context("w-gpu-1 utilization")?;
    let gpu = find(&w2["metrics"], "metric", "gpu.util_pct").context("gpu util")?;
    assert_eq!((gpu["device"].as_str(), f(&gpu["max"])), (Some("gpu0"), 90.0));
    let temp = find(&w2["metrics"], "metric", "gpu.temp_c").context("gpu temp")?;
    assert_eq!(f(&temp["avg"]), 72.5);
    assert!(find(&w2["metrics"], "metric", "gpu.mem_used_pct").is_some(), "{w2}");
    assert!(r["fleet_cpu"].as_array().is_some_and(|p| !p.is_empty()), "fleet CPU series");

    let tasks = &r["tasks"];
    assert_eq!(tasks.as_array().map(Vec::len), Some(7), "{tasks}");
    let evil = find(tasks, "task_id", "t-evil").context("t-evil")?;
    assert_eq!(evil["name"], EVIL);
    assert_eq!((evil["gpu_memory_peak_mb"].as_u64(), evil["memory_peak_mb"].as_u64()), (Some(30_000), Some(4096)));
    assert_eq!((f(&evil["cpu_peak_pct"]), f(&evil["cpu_avg_pct"]), f(&evil["duration_s"])), (35.0, 20.0, 70.5));
    assert_eq!(tasks[0]["task_id"], "t-slow", "latest first");

    let failures = r["failures"].as_array().context("failures")?;
    assert_eq!(failures.len(), 2, "{failures:?}");
    let fail = find(&r["failures"], "task_id", "t-fail").context("t-fail listed")?;
    assert_eq!(fail["error"], "assertion failed: x < y & z");
    assert_eq!(fail["worker_id"], "w-cpu-1");
    assert_eq!((fail["status"].as_str(), fail["exit_code"].as_i64()), (Some("failed"), Some(3)));
    let slow = find(&r["failures"], "task_id", "t-slow").context("t-slow listed")?;
    assert_eq!(slow["status"], "timed_out");

    let slowest = &r["slowest"];
    assert_eq!(slowest[0]["name"], "suite.slow", "{slowest}");
    assert_eq!(f(&slowest[0]["max_s"]), 300.0);
    let fast = find(slowest, "name", "suite.fast").context("suite.fast")?;
    assert_eq!(
        (fast["runs"].as_u64(), f(&fast["max_s"]), fast["hardware_class"].as_str()),
        (Some(2), 20.0, Some("cpu:x86_64"))
    );
    let classes: Vec<&str> =
        r["hardware"].as_array().context("hardware")?.iter().filter_map(|h| h["hardware_class"].as_str()).collect();
    assert_eq!(classes, ["cpu:x86_64", "gpu:h100"]);
    let h100 = find(&r["hardware"], "hardware_class", "gpu:h100").context("h100")?;
    assert_eq!((h100["runs"].as_u64(), f(&h100["max_s"]), f(&h100["total_s"])), (Some(2), 300.0, 370.5));
    let cpu = find(&r["hardware"], "hardware_class", "cpu:x86_64").context("cpu")?;
    assert_eq!((cpu["runs"].as_u64(), f(&cpu["max_s"]), f(&cpu["total_s"])), (Some(3), 20.0, 35.0), "stopped left out");

    let alerts = r["alerts"].as_array().context("alerts")?;
    assert_eq!(alerts.len(), 2, "the old alert is outside the window: {alerts:?}");
    let cpu_alert = find(&r["alerts"], "fingerprint", "fp-cpu").context("fp-cpu")?;
    assert_eq!((cpu_alert["rule"].as_str(), cpu_alert["state"].as_str()), (Some("HighCpu"), Some("resolved")));
    assert_eq!((cpu_alert["severity"].as_str(), cpu_alert["worker_id"].as_str()), (Some("warning"), Some("w-cpu-1")));
    let (starts, ends) = (cpu_alert["starts_at"].as_u64().unwrap_or(0), cpu_alert["ends_at"].as_u64().unwrap_or(0));
    assert_eq!(ends - starts, 600, "{cpu_alert}");
    let gpu_alert = find(&r["alerts"], "fingerprint", "fp-gpu").context("fp-gpu")?;
    assert_eq!((gpu_alert["state"].as_str(), gpu_alert["ends_at"].as_u64()), (Some("firing"), Some(0)));
    assert_eq!(gpu_alert["summary"], "GpuHot on w-gpu-1");

    // HTML: the name only escaped
    let html = std::fs::read_to_string(&html_path)?;
    let escaped = "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quotes&quot;";
    assert!(html.contains(escaped), "escaped task name missing");
    assert!(!html.contains("<b>") && !html.contains(EVIL), "raw task name in the HTML");
    assert!(html.contains("x &lt; y &amp; z"), "escaped error text");
    assert!(html.matches("<svg").count() >= 3, "charts: per-worker CPU, memory, fleet CPU, durations");
    // self-contained: no script, nothing loaded; the only URLs are the SVG namespace
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("https://"));
    assert_eq!(html.matches("http://").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());

    // headless Chromium renders it...
    let png = dir.path().join("report.png");
    chrome(&browser, dir.path(), &[&format!("--screenshot={}", png.display())], &html_path)?;
    let size = check_png(&png)?;
    assert!(size > 10_000, "screenshot of {size} bytes");
    // ...to much more than an empty page
    let blank_html = dir.path().join("blank.html");
    std::fs::write(&blank_html, "<!DOCTYPE html><html><body></body></html>")?;
    let blank_png = dir.path().join("blank.png");
    chrome(&browser, dir.path(), &[&format!("--screenshot={}", blank_png.display())], &blank_html)?;
    let blank = check_png(&blank_png)?;
    assert!(size > 2 * blank, "the report's screenshot ({size} bytes) is barely more than a blank page's ({blank})");

    // ...and parses it: the name is text in the DOM, no <b> element came from it
    let dom = chrome(&browser, dir.path(), &["--dump-dom"], &html_path)?;
    assert!(dom.contains("&lt;b&gt;bold&lt;/b&gt; &amp; \"quotes\""), "task name as text in the DOM");
    assert!(!dom.contains("<b>bold</b>") && !dom.contains("<b>"), "a <b> element from the task name");
    assert!(dom.contains("<svg") && dom.contains("<polyline"), "the charts are in the DOM");
    assert!(dom.contains("assertion failed: x &lt; y &amp; z"));
    Ok(())
}

/// `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n))).find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `args` (own profile under `dir`); returns its stdout.
fn chrome(browser: &Path, dir: &Path, args: &[&str], page: &Path) -> anyhow::Result<String> {
    let profile = tempfile::tempdir_in(dir)?;
    let out_file = dir.join("chromium.stdout");
    let err_file = dir.join("chromium.stderr");
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,2400"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file)?)
        .stderr(std::fs::File::create(&err_file)?)
        .spawn()
        .with_context(|| format!("start {}", browser.display()))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{} {args:?} did not finish within 120 s: {}",
                browser.display(),
                std::fs::read_to_string(&err_file).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    anyhow::ensure!(
        status.success(),
        "{} {args:?}: {status}: {}",
        browser.display(),
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    Ok(std::fs::read_to_string(&out_file)?)
}

/// Checks that `path` is a PNG of the window's size; returns its length.
fn check_png(path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("no screenshot at {}", path.display()))?;
    anyhow::ensure!(bytes.len() > 33 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
    anyhow::ensure!(&bytes[12..16] == b"IHDR", "no IHDR chunk first");
    let dim = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    anyhow::ensure!((dim(16), dim(20)) == (1280, 2400), "screenshot is {}x{}, expected 1280x2400", dim(16), dim(20));
    Ok(bytes.len())
}
