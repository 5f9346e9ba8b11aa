//! What a look-up in the model returns: a predicted runtime, its uncertainty
//! and where it comes from, and the age bucket the error metrics file it under.

/// Where a prediction comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The pair's own runs (blended with the factor model while they are few).
    Observed,
    /// The factor model: the pair was never observed.
    Factor,
}

/// A predicted runtime with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Seconds (the exponential of the predicted ln runtime: a median).
    pub runtime_s: f64,
    /// Standard deviation of ln(runtime): 0.1 is about ±10 %.
    pub log_sd: f64,
    /// Where it comes from.
    pub source: Source,
    /// Successful runs of the pair.
    pub runs: u64,
    /// For a pair never observed: whether other workloads of its test type
    /// ran on this hardware (without, the estimate rests on the class's
    /// average speed-up alone and is much less certain).
    pub type_seen: bool,
}

/// The age bucket of a prediction, for the error metrics: the pair's
/// successful runs, and for a pair never observed whether its test type ran on
/// the hardware ("unseen") or not ("unseen-type").
pub fn age_bucket(p: &Prediction) -> &'static str {
    match p.runs {
        0 if !p.type_seen => "unseen-type",
        0 => "unseen",
        1..=4 => "1-4",
        5..=19 => "5-19",
        _ => "20+",
    }
}
