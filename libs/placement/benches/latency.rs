//! Placement latency percentiles (criterion reports means): each placement of
//! the bench task is timed on its own, with the learned model and half the
//! fleet busy, and p50 / p99 / max are printed.
//! `cargo bench -p hwsched-placement --bench latency`
#![allow(missing_docs)]

mod fleet;

use std::time::{Duration, Instant};

use hwsched_placement::{place_with, Scoring};

fn main() {
    let model = fleet::model();
    let scoring = Scoring { model: Some(&model), ..Default::default() };
    let task = fleet::gpu_task();
    println!("{:>8} {:>8} {:>10} {:>10} {:>10}", "workers", "samples", "p50", "p99", "max");
    for (n, samples) in [(1_000usize, 5_000usize), (10_000, 1_000)] {
        let ws = fleet::with_busy(fleet::workers(n));
        for _ in 0..samples / 10 {
            std::hint::black_box(place_with(&task, &ws, &scoring));
        }
        let mut times: Vec<Duration> = (0..samples)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(place_with(&task, &ws, &scoring));
                t0.elapsed()
            })
            .collect();
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).saturating_sub(1)];
        println!(
            "{n:>8} {samples:>8} {:>10.1?} {:>10.1?} {:>10.1?}",
            pct(0.50),
            pct(0.99),
            times.last().copied().unwrap_or_default()
        );
    }
}
