//! Fleets drawn from a seed: how many workers of each class, which GPU hosts
//! are poorly cooled (and how badly), which CPU servers are shared with other
//! tenants.

use crate::{
    kinds::{self, Gpu, GPUS, GPU_B200},
    rng::Rng,
    trace::{Background, Thermal, WorkerLine},
};

/// How many workers of each class a fleet has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mix {
    /// CPU servers (4 slots each).
    pub cpu: usize,
    /// T4 hosts.
    pub t4: usize,
    /// A100 hosts.
    pub a100: usize,
    /// H100 hosts.
    pub h100: usize,
    /// B200 hosts.
    pub b200: usize,
    /// TPU hosts.
    pub tpu: usize,
    /// Browsers with WebGPU (2 slots each).
    pub browser: usize,
    /// Android phones.
    pub phone: usize,
}

impl Mix {
    /// A mixed fleet of `total` workers: `browsers` browsers and `phones`
    /// phones, at least one of every other built-in class, the rest drawn by
    /// the shares CPU 30 %, T4 20 %, A100 17 %, H100 17 %, TPU 16 %.
    pub fn draw(rng: &mut Rng, total: usize, browsers: usize, phones: usize) -> Self {
        let mut m = Mix { cpu: 1, t4: 1, a100: 1, h100: 1, tpu: 1, browser: browsers, phone: phones, b200: 0 };
        let shares = [0.30, 0.20, 0.17, 0.17, 0.16];
        for _ in m.len()..total {
            let mut u = rng.f64();
            let i = shares.iter().position(|s| {
                u -= s;
                u < 0.0
            });
            match i.unwrap_or(0) {
                0 => m.cpu += 1,
                1 => m.t4 += 1,
                2 => m.a100 += 1,
                3 => m.h100 += 1,
                _ => m.tpu += 1,
            }
        }
        m
    }

    /// Workers in all.
    pub fn len(&self) -> usize {
        self.cpu + self.t4 + self.a100 + self.h100 + self.b200 + self.tpu + self.browser + self.phone
    }

    /// Whether it has no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the fleet's hosts heat and share their CPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Heat {
    /// Share of GPU hosts that are poorly cooled (they throttle when kept busy).
    pub poorly_cooled: f64,
    /// Range of a poorly cooled host's rise when busy, °C above its 38-42 °C
    /// idle (from 55: 93 °C and up, past the 90 °C threshold); drawn per host.
    pub heat_c: (f64, f64),
    /// Range of its time constant, s (short: it throttles soon after it gets busy).
    pub tau_s: (f64, f64),
    /// Share of CPU servers shared with tenants who saturate them (97 %) for
    /// one or two windows of 10-20 minutes.
    pub shared_cpu: f64,
}

impl Default for Heat {
    fn default() -> Self {
        Self { poorly_cooled: 0.25, heat_c: (55.0, 70.0), tau_s: (20.0, 60.0), shared_cpu: 0.15 }
    }
}

fn between(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.f64()
}

/// The workers of a mix, every one present the whole run. The first host of
/// each class is well cooled and unshared.
pub fn build(rng: &mut Rng, mix: &Mix, heat: &Heat, horizon_s: f64) -> Vec<WorkerLine> {
    let mut out = Vec::new();
    for i in 1..=mix.cpu {
        let mut background = Vec::new();
        if i > 1 && rng.f64() < heat.shared_cpu {
            for _ in 0..1 + rng.below(2) {
                let from_s = (rng.f64() * horizon_s * 0.8).round();
                let to_s = from_s + (600.0 + 600.0 * rng.f64()).round();
                background.push(Background { from_s, to_s, cpu_pct: 97.0 });
            }
        }
        out.push(kinds::cpu_server(i, background));
    }
    let gpus: [(&Gpu, usize); 4] =
        [(&GPUS[0], mix.t4), (&GPUS[1], mix.a100), (&GPUS[2], mix.h100), (&GPU_B200, mix.b200)];
    for (g, n) in gpus {
        for i in 1..=n {
            let thermal = if i > 1 && rng.f64() < heat.poorly_cooled {
                Some(Thermal {
                    ambient_c: between(rng, (38.0, 42.0)).round(),
                    heat_c: between(rng, heat.heat_c).round(),
                    tau_s: between(rng, heat.tau_s).round(),
                    throttle_c: 90.0,
                })
            } else {
                kinds::cool()
            };
            out.push(kinds::gpu_host(g, i, thermal));
        }
    }
    out.extend((1..=mix.tpu).map(kinds::tpu_host));
    out.extend((1..=mix.browser).map(kinds::browser));
    out.extend((1..=mix.phone).map(kinds::phone));
    out
}
