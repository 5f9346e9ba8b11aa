//! Tests of the report's rendering: escaping, well-formed SVG, odd values,
//! an empty window, and the formats of times, numbers and `--since`.

use hwsched_store::report::{
    AlertEntry, Failure, HardwareDurations, MetricStats, Point, Report, SlowTest, Summary, TaskResources,
    WorkerUtilization,
};

use super::{
    dates::{fmt_time, fmt_window},
    html::render_html,
    parse_since,
    svg::{nice_ceil, sparkline},
    text::{clip, esc, fmt_secs},
};

const EVIL: &str = "<script>alert(1)</script> & \"x\"";
const EVIL_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;";

fn sample() -> Report {
    let stats = |metric: &str, device: &str, avg: f64, max: f64| MetricStats {
        metric: metric.into(),
        device: device.into(),
        samples: 10,
        min: 1.0,
        avg,
        p95: max * 0.95,
        max,
    };
    Report {
        generated_at: 1_795_640_000,
        window_s: 86_400,
        from: 1_795_553_600,
        database: "hwsched".into(),
        server_version: "18.16".into(),
        limit: 500,
        summary: Summary {
            workers_seen: 2,
            tasks_run: 3,
            succeeded: 2,
            failed: 1,
            cancelled: 0,
            superseded: 0,
            success_rate: Some(2.0 / 3.0),
            total_task_time_s: 95.5,
            alerts_fired: 1,
        },
        utilization: vec![
            WorkerUtilization {
                worker_id: format!("w1 {EVIL}"),
                metrics: vec![stats("cpu.util_pct", "cpu", 40.0, 90.0), stats("mem.used_pct", "mem", 30.0, 50.0)],
            },
            WorkerUtilization {
                worker_id: "gpu-box".into(),
                metrics: vec![
                    stats("cpu.util_pct", "cpu", 10.0, 20.0),
                    stats("gpu.util_pct", "gpu0", 70.0, 100.0),
                    stats("gpu.temp_c", "gpu0", 60.0, 80.0),
                ],
            },
        ],
        fleet_cpu: (0..30).map(|i| Point { time: 1_795_553_600 + i * 1440, value: f64::from(i % 7) * 10.0 }).collect(),
        fleet_cpu_bucket_s: 1440,
        tasks: vec![TaskResources {
            task_id: "t1".into(),
            attempt: 1,
            name: EVIL.into(),
            test_type: "unit".into(),
            worker_id: "w1".into(),
            hardware_class: format!("cpu:{EVIL}"),
            status: "failed".into(),
            finished_at: 1_795_600_000,
            duration_s: 12.5,
            cpu_peak_pct: 99.0,
            cpu_avg_pct: 50.0,
            memory_peak_mb: 2048,
            gpu_memory_peak_mb: 0,
        }],
        slowest: vec![SlowTest {
            name: EVIL.into(),
            test_type: "unit".into(),
            hardware_class: "cpu:x86".into(),
            runs: 2,
            p50_s: 10.0,
            p95_s: 12.0,
            max_s: 12.5,
        }],
        hardware: vec![
            HardwareDurations {
                hardware_class: format!("cpu:{EVIL}"),
                runs: 2,
                p50_s: 10.0,
                p95_s: 12.0,
                max_s: 12.5,
                total_s: 25.0,
            },
            HardwareDurations {
                hardware_class: "gpu:h100".into(),
                runs: 1,
                p50_s: 70.5,
                p95_s: 70.5,
                max_s: 70.5,
                total_s: 70.5,
            },
        ],
        failures: sample_failures(),
        alerts: sample_alerts(),
    }
}

fn sample_failures() -> Vec<Failure> {
    vec![Failure {
        task_id: "t1".into(),
        attempt: 1,
        name: EVIL.into(),
        test_type: "unit".into(),
        worker_id: "w1".into(),
        hardware_class: "cpu:x86".into(),
        status: "failed".into(),
        exit_code: 1,
        finished_at: 1_795_600_000,
        duration_s: 12.5,
        error: format!("exit 1: {EVIL}"),
    }]
}

fn sample_alerts() -> Vec<AlertEntry> {
    vec![AlertEntry {
        fingerprint: "f1".into(),
        rule: format!("HighCpu{EVIL}"),
        severity: "warning".into(),
        worker_id: "w1".into(),
        device: "cpu".into(),
        metric: "cpu.util_pct".into(),
        state: "resolved".into(),
        starts_at: 1_795_600_000,
        ends_at: 1_795_600_300,
        value: 95.0,
        threshold: 90.0,
        summary: format!("CPU high {EVIL}"),
        muted_by: String::new(),
    }]
}

/// Checks the basics of well-formed XML in every `<svg>...</svg>` of
/// `html`: tags nest and close, attribute values are quoted, and every
/// `&` starts an entity.
fn check_svgs(html: &str) -> usize {
    let mut count = 0;
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("an <svg> is closed") + start + "</svg>".len();
        check_xml(&rest[start..end]);
        count += 1;
        rest = &rest[end..];
    }
    count
}

fn check_xml(svg: &str) {
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
    let mut stack: Vec<&str> = Vec::new();
    let mut i = 0;
    while let Some(open) = svg[i..].find('<') {
        let text = &svg[i..i + open];
        check_text(text);
        let tag_start = i + open + 1;
        let close = svg[tag_start..].find('>').expect("a tag ends") + tag_start;
        let tag = &svg[tag_start..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name.trim()), "closing </{name}> in {svg}");
        } else {
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().expect("a tag name");
            check_attributes(body[name.len()..].trim());
            if !self_closing {
                stack.push(name);
            }
        }
        i = close + 1;
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

fn check_text(text: &str) {
    for (k, _) in text.match_indices('&') {
        let after = &text[k..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| after.starts_with(e)),
            "bare & in {text:?}"
        );
    }
}

fn check_attributes(mut attrs: &str) {
    while !attrs.is_empty() {
        let eq = attrs.find('=').expect("attribute has a value");
        let name = attrs[..eq].trim();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'), "attribute {name:?}");
        let after = &attrs[eq + 1..];
        assert!(after.starts_with('"'), "unquoted value of {name}: {after}");
        let end = after[1..].find('"').expect("closing quote") + 1;
        check_text(&after[1..end]);
        attrs = after[end + 1..].trim_start();
    }
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(esc(EVIL), EVIL_ESCAPED);
    assert_eq!(esc("it's"), "it&#39;s");
    assert_eq!(esc("a\u{1}b"), "a\u{FFFD}b");
    assert_eq!(esc("plain ünïcode"), "plain ünïcode");
}

#[test]
fn data_appears_only_escaped_including_inside_svg() {
    let html = render_html(&sample());
    assert!(!html.contains("<script"), "raw script tag in the page");
    assert!(!html.contains(EVIL));
    assert!(!html.contains("alert(1)</script>"));
    assert!(html.contains(EVIL_ESCAPED), "escaped name missing");
    // inside SVG too: the worker label of the CPU chart and the hardware class of the duration chart
    let svgs: Vec<&str> = html.split("<svg").skip(1).collect();
    assert!(svgs.iter().any(|s| s.contains(&format!("w1 {EVIL_ESCAPED}"))), "escaped worker id in a chart");
    assert!(svgs.iter().any(|s| s.contains(&format!("cpu:{}", esc(&clip(EVIL, 30))))), "hardware class label");
    assert!(!html.contains("<script>"));
}

#[test]
fn svgs_are_well_formed() {
    let html = render_html(&sample());
    // CPU, memory, fleet CPU line, durations per hardware class
    assert_eq!(check_svgs(&html), 4);
    assert!(html.contains("<polyline"));
    assert!(!html.contains("NaN"), "non-finite numbers in the page");
    assert!(!html.contains("<script") && !html.contains("http-equiv") && !html.contains("src="));
}

#[test]
fn charts_survive_odd_values() {
    let mut r = sample();
    r.utilization[0].metrics[0].avg = f64::NAN;
    r.utilization[0].metrics[0].p95 = f64::INFINITY;
    r.hardware[0].p50_s = -3.0;
    r.fleet_cpu.truncate(1);
    let html = render_html(&r);
    assert_eq!(check_svgs(&html), 3, "no line for a single point");
    assert!(!html.contains("NaN"));
    let one = sparkline("t", &r.fleet_cpu, "%");
    check_xml(&one);
    assert!(one.contains("not enough samples"));
}

#[test]
fn an_empty_window_renders_a_sensible_page() {
    let r = Report {
        generated_at: 1_795_640_000,
        window_s: 1800,
        from: 1_795_638_200,
        database: "hwsched".into(),
        server_version: "24.8".into(),
        limit: 500,
        ..Default::default()
    };
    let html = render_html(&r);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.ends_with("</html>\n"));
    assert!(html.contains("hwsched report: last 30m"));
    assert!(html.contains("No CPU, memory or GPU metrics in this window."));
    assert!(html.contains("No task runs in this window."));
    assert!(html.contains("No failed, timed-out or errored task runs in this window."));
    assert!(html.contains("No alerts in this window."));
    assert_eq!(check_svgs(&html), 0);
    assert!(html.contains("<div class=\"k\">success rate</div><div class=\"v\">-</div>"));
    // and the JSON of it round-trips
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
    assert_eq!(back, r);
}

#[test]
fn since_parses_units() {
    assert_eq!(parse_since("30m"), Ok(1800));
    assert_eq!(parse_since("24h"), Ok(86_400));
    assert_eq!(parse_since("7d"), Ok(604_800));
    assert_eq!(parse_since("90s"), Ok(90));
    assert_eq!(parse_since("2w"), Ok(1_209_600));
    for bad in ["", "h", "24", "0h", "1y", "-1h", "1.5h", "99999999999999d"] {
        assert!(parse_since(bad).is_err(), "{bad:?}");
    }
    assert_eq!(fmt_window(1800), "30m");
    assert_eq!(fmt_window(86_400), "24h");
    assert_eq!(fmt_window(604_800), "7d");
    assert_eq!(fmt_window(90), "90s");
    assert_eq!(fmt_window(7200), "2h");
}

#[test]
fn times_and_numbers_format() {
    assert_eq!(fmt_time(0), "-");
    assert_eq!(fmt_time(1), "1970-01-01 00:00:01");
    assert_eq!(fmt_time(951_782_400), "2000-02-29 00:00:00");
    assert_eq!(fmt_time(1_795_640_374), "2026-11-25 20:59:34");
    assert_eq!(nice_ceil(0.0), 1.0);
    assert_eq!(nice_ceil(100.0), 100.0);
    assert_eq!(nice_ceil(101.0), 200.0);
    assert_eq!(nice_ceil(3.2), 5.0);
    assert_eq!(fmt_secs(4.21), "4.2s");
    assert_eq!(fmt_secs(750.0), "12.5m");
    assert_eq!(clip("abcdef", 4), "abc…");
    assert_eq!(clip("abc", 4), "abc");
}
