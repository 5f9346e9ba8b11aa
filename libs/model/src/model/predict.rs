//! Predicting a pair: its own runs, blended with the factor model while they
//! are few, else the factor model alone.

use crate::{
    model::Model,
    prediction::{Prediction, Source},
    stats::{learned, runs, MIN_LOG_SD},
};

/// Successful runs after which a pair's statistics stop trusting the
/// factor model (before, the two are blended by their variances).
const BLEND_UNTIL: u64 = 20;

impl Model {
    /// The runtime of a pair: its own runs when it has some (blended with the
    /// factor model, by their variances, while it has fewer than 20), else the
    /// factor model when both the workload and the hardware were seen. `None`
    /// otherwise (the caller falls back to the declared duration).
    pub fn predict(&self, workload: &str, hardware: &str) -> Option<Prediction> {
        let factor = self.factors.predict(workload, hardware);
        let own = self.entry(workload, hardware).filter(|e| learned(e));
        match (own, factor) {
            (Some(e), f) => {
                let n = runs(e);
                let data_var = e.log_runtime_var.max(MIN_LOG_SD * MIN_LOG_SD) / n as f64;
                let (x, var) = match f {
                    Some((fx, fvar, _)) if n < BLEND_UNTIL => {
                        let var = 1.0 / (1.0 / data_var + 1.0 / fvar);
                        (var * (e.log_runtime_mean / data_var + fx / fvar), var)
                    }
                    _ => (e.log_runtime_mean, data_var),
                };
                Some(Prediction {
                    runtime_s: x.exp(),
                    log_sd: var.sqrt(),
                    source: Source::Observed,
                    runs: n,
                    type_seen: true,
                })
            }
            (None, Some((x, var, group))) => Some(Prediction {
                runtime_s: x.exp(),
                log_sd: var.sqrt(),
                source: Source::Factor,
                runs: 0,
                type_seen: group > 0,
            }),
            (None, None) => None,
        }
    }

    /// Predicted runtime (s) of a pair ([`Model::predict`]).
    pub fn predict_s(&self, workload: &str, hardware: &str) -> Option<f64> {
        self.predict(workload, hardware).map(|p| p.runtime_s)
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::TaskStatus;

    use crate::{model::Model, prediction::Source, test_support::res};

    #[test]
    fn unseen_pairs_are_predicted_by_the_factor_model_with_wider_uncertainty() {
        let mut m = Model::default();
        // peers ran on both classes: the cpu is 20x slower
        for name in ["a", "b", "c"] {
            for _ in 0..5 {
                m.observe(&res(name, "gpu", 10.0, TaskStatus::Succeeded));
                m.observe(&res(name, "cpu", 200.0, TaskStatus::Succeeded));
            }
        }
        for _ in 0..5 {
            m.observe(&res("t", "gpu", 30.0, TaskStatus::Succeeded));
        }
        assert_eq!(m.predict("unit/-/t", "cpu"), None, "not refitted yet");
        m.refit();
        let p = m.predict("unit/-/t", "cpu").expect("factor");
        assert_eq!(p.source, Source::Factor);
        assert!((p.runtime_s / 600.0 - 1.0).abs() < 0.3, "{p:?}");
        let seen = m.predict("unit/-/t", "gpu").expect("seen");
        assert!(p.log_sd > seen.log_sd, "{p:?} vs {seen:?}");
        assert!((seen.runtime_s - 30.0).abs() < 1.0, "{seen:?}");
        // a workload never seen, or hardware never seen: no prediction
        assert_eq!(m.predict("unit/-/new", "cpu"), None);
        assert_eq!(m.predict("unit/-/t", "tpu"), None);
        assert!((m.best_observed_s("unit/-/t").unwrap_or(0.0) - 30.0).abs() < 1e-9);
    }
}
