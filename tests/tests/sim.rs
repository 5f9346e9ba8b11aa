//! `hwsched sim` as other tools use it: JSON with the documented field names,
//! the same output for the same seed, and a written trace replays exactly
//! like the built-in one it came from.

use std::process::Command;

use hwsched_tests::hwsched_bin;

fn sim(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(hwsched_bin()?).arg("sim").args(args).output()?;
    anyhow::ensure!(out.status.success(), "sim {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn json_output_is_stable_and_named_as_documented() -> anyhow::Result<()> {
    let args = ["--seed", "2", "--policy", "least-loaded,hwsched", "-o", "json"];
    let a = sim(&args)?;
    assert_eq!(a, sim(&args)?, "same seed, same output");
    let reports: serde_json::Value = serde_json::from_str(&a)?;
    let reports = reports.as_array().ok_or_else(|| anyhow::anyhow!("not an array: {a}"))?;
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["policy"], "least-loaded");
    assert_eq!(reports[1]["policy"], "hwsched");
    for r in reports {
        for field in [
            "makespan_s",
            "mean_completion_s",
            "p95_completion_s",
            "throttled_placements",
            "overloaded_placements",
            "makespan_lower_bound_s",
            "prediction_mape",
        ] {
            assert!(r[field].is_number(), "{field} in {r}");
        }
    }
    assert!(reports[1]["mean_completion_s"].as_f64() < reports[0]["mean_completion_s"].as_f64());
    Ok(())
}

#[test]
fn a_generated_trace_replays_like_the_builtin_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("trace.jsonl");
    std::fs::write(&path, sim(&["--generate", "--seed", "5"])?)?;
    let text = std::fs::read_to_string(&path)?;
    assert!(text.lines().any(|l| l.starts_with(r#"{"kind":"worker""#)));
    assert!(text.lines().any(|l| l.starts_with(r#"{"kind":"task""#)));
    let replay = sim(&["--trace", path.to_str().unwrap_or_default(), "--seed", "5", "--policy", "seed", "-o", "json"])?;
    let builtin = sim(&["--seed", "5", "--policy", "seed", "-o", "json"])?;
    assert_eq!(replay, builtin);
    // a broken trace is refused with the line and the reason
    std::fs::write(&path, format!("{}\n{{\"kind\":\"task\",\"arrival_s\":-1}}\n", text.lines().next().unwrap_or("")))?;
    let out = Command::new(hwsched_bin()?).args(["sim", "--trace"]).arg(&path).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"), "{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}
