//! Human-readable comparison of policies.

use std::fmt::Write as _;

use crate::engine::Report;

fn pct_lower(base: f64, x: f64) -> String {
    if base > 0.0 {
        format!("{:+.0}%", 100.0 * (x - base) / base)
    } else {
        "-".into()
    }
}

/// A table with one row per policy, the last policy compared with each other.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>7}",
        "policy", "makespan", "bound", "mean_done", "p95_done", "throttled", "overload", "retry", "failed", "mape"
    );
    for r in reports {
        let mape = r.prediction_mape.map_or("-".to_string(), |m| format!("{:.1}%", 100.0 * m));
        let _ = writeln!(
            out,
            "{:<19} {:>8.0}s {:>8.0}s {:>9.1}s {:>9.1}s {:>9} {:>9} {:>6} {:>6} {:>7}",
            r.policy,
            r.makespan_s,
            r.makespan_lower_bound_s,
            r.mean_completion_s,
            r.p95_completion_s,
            r.throttled_placements,
            r.overloaded_placements,
            r.retries,
            r.failed,
            mape
        );
    }
    if let Some(last) = reports.last() {
        let _ = writeln!(out);
        for r in &reports[..reports.len() - 1] {
            let _ = writeln!(
                out,
                "{} vs {}: mean completion {}, p95 {}, makespan {}",
                last.policy,
                r.policy,
                pct_lower(r.mean_completion_s, last.mean_completion_s),
                pct_lower(r.p95_completion_s, last.p95_completion_s),
                pct_lower(r.makespan_s, last.makespan_s),
            );
        }
        let _ = writeln!(
            out,
            "{}: makespan {:.1}% above the lower bound",
            last.policy,
            100.0 * (last.makespan_s / last.makespan_lower_bound_s.max(1e-9) - 1.0)
        );
        let _ = writeln!(out);
        for r in reports {
            let waits: Vec<String> = r.mean_wait_by_priority_s.iter().map(|(p, w)| format!("p{p} {w:.1}s")).collect();
            let util: Vec<String> =
                r.utilization_by_class.iter().map(|(c, u)| format!("{c} {:.0}%", 100.0 * u)).collect();
            let _ = writeln!(out, "{:<19} wait: {}", r.policy, waits.join(", "));
            let _ = writeln!(out, "{:<19} utilization: {}", "", util.join(", "));
            let over_time: Vec<String> = r
                .prediction_mape_over_time
                .iter()
                .map(|m| m.map_or("-".to_string(), |m| format!("{:.0}%", 100.0 * m)))
                .collect();
            let _ = writeln!(out, "{:<19} prediction error by tenth of the run: {}", "", over_time.join(" "));
            if !r.prediction_mape_by_age.is_empty() {
                let by_age: Vec<String> =
                    r.prediction_mape_by_age.iter().map(|(a, m)| format!("{a} {:.0}%", 100.0 * m)).collect();
                let _ = writeln!(out, "{:<19} prediction error by the pair's runs: {}", "", by_age.join(", "));
            }
        }
    }
    out
}
