//! Scenario families: traces generated from a family's parameters and a
//! seed, each stressing the scheduler in its own way (documented in
//! docs/SIMULATOR.md, "Scenario families"). Every family varies its fleet's
//! size and mix, its arrivals and its sizes by seed, uses the built-in
//! trace's kinds of test and hardware classes (`crate::kinds`), gives each
//! test its own speed factor and each run 8 % noise, and has flaky tests.

pub mod burst;
pub mod churn;
pub mod faults;
pub mod fleet;
pub mod flood;
pub mod large;
pub mod new_hardware;
pub mod soak;
pub mod traffic;

use crate::{rng::Rng, trace::Trace};

/// A family of generated traces.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line saying what it is.
    pub about: &'static str,
    /// Its trace for a seed, with its default parameters.
    pub generate: fn(u64) -> Trace,
}

/// Every family, by name.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "burst",
        about: "a nightly of 600-1400 tests arriving within one minute on 20-40 mixed workers, scarce browsers and phones",
        generate: |seed| burst::Burst::default().generate(seed),
    },
    Family {
        name: "flood",
        about: "an 800-test priority-5 regression at 60 s under an hour of priority-1 PR suites; heavy-tailed sizes, producers declaring 3-10x wrong",
        generate: |seed| flood::Flood::default().generate(seed),
    },
    Family {
        name: "new-hardware",
        about: "B200 hosts join half-way (every pair unseen) during PR traffic, then a nightly",
        generate: |seed| new_hardware::NewHardware::default().generate(seed),
    },
    Family {
        name: "soak",
        about: "300-1500 s GPU soak training on a fleet of mostly poorly cooled GPUs, plus short PR traffic",
        generate: |seed| soak::Soak::default().generate(seed),
    },
    Family {
        name: "churn",
        about: "workers leave for maintenance, retire and join during steady traffic, 20-60 workers",
        generate: |seed| churn::Churn::default().generate(seed),
    },
    Family {
        name: "faults",
        about: "an hour of PR traffic while 1-3 workers go bad, a GPU host has a fault burst; flaky, OOM-prone and straggling tests",
        generate: |seed| faults::Faults::default().generate(seed),
    },
    Family {
        name: "large",
        about: "2,400 tests on 56 mixed workers: the simulator's speed target",
        generate: |seed| large::Large::default().generate(seed),
    },
];

/// The family of this name.
pub fn by_name(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// An integer drawn uniformly in the inclusive range.
pub(crate) fn within(rng: &mut Rng, (lo, hi): (usize, usize)) -> usize {
    lo + rng.below(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use hwsched_placement::Policy;

    use super::{
        burst::Burst, churn::Churn, faults::Faults, flood::Flood, large::Large, new_hardware::NewHardware, soak::Soak,
        FAMILIES,
    };
    use crate::{
        engine::{run, Config},
        trace::Trace,
    };

    /// A family's generator with small parameters.
    type Small = Box<dyn Fn(u64) -> Trace>;

    /// Each family with parameters small enough for a debug build.
    fn small() -> Vec<(&'static str, Small)> {
        vec![
            ("burst", Box::new(|s| Burst { tests: (60, 90), workers: (8, 12), ..Burst::default() }.generate(s))),
            (
                "flood",
                Box::new(|s| {
                    Flood { regression: 60, traffic_s: 600.0, pr_sizes: (3, 8), workers: (8, 12), ..Flood::default() }
                        .generate(s)
                }),
            ),
            (
                "new-hardware",
                Box::new(|s| {
                    NewHardware {
                        workers: (8, 12),
                        nightly: (30, 50),
                        traffic_s: 900.0,
                        pr_sizes: (3, 8),
                        ..NewHardware::default()
                    }
                    .generate(s)
                }),
            ),
            (
                "soak",
                Box::new(|s| {
                    Soak {
                        soaks: (6, 10),
                        gpus_per_kind: (1, 3),
                        traffic_s: 900.0,
                        pr_sizes: (3, 8),
                        ..Soak::default()
                    }
                    .generate(s)
                }),
            ),
            (
                "churn",
                Box::new(|s| {
                    Churn {
                        workers: (10, 16),
                        nightly: (20, 40),
                        traffic_s: 1_200.0,
                        pr_sizes: (3, 8),
                        ..Churn::default()
                    }
                    .generate(s)
                }),
            ),
            (
                "faults",
                Box::new(|s| {
                    Faults {
                        workers: (10, 12),
                        traffic_s: 900.0,
                        pr_sizes: (3, 8),
                        nightly: (20, 30),
                        ..Faults::default()
                    }
                    .generate(s)
                }),
            ),
            (
                "large",
                Box::new(|s| Large { tests: 120, workers: 12, traffic_s: 600.0, ..Large::default() }.generate(s)),
            ),
        ]
    }

    #[test]
    fn every_family_is_valid_repeatable_and_varies_by_seed() {
        for f in FAMILIES {
            let t = (f.generate)(1);
            t.check().unwrap_or_else(|e| panic!("{}: {e}", f.name));
            assert_eq!(t, (f.generate)(1), "{}", f.name);
            assert_ne!(t, (f.generate)(2), "{}", f.name);
            assert_eq!(Trace::parse(&t.to_jsonl()).expect("round trip"), t, "{}", f.name);
        }
        let sizes = |name: &str, seed: u64| {
            let f = FAMILIES.iter().find(|f| f.name == name).expect("family");
            let t = (f.generate)(seed);
            (t.workers.len(), t.tasks.len())
        };
        let large = sizes("large", 3);
        assert_eq!(large, (56, 2_400));
        let bursts: std::collections::BTreeSet<(usize, usize)> = (1..=4).map(|s| sizes("burst", s)).collect();
        assert!(bursts.len() > 1, "{bursts:?}");
        assert!(bursts.iter().all(|(w, t)| (20..=40).contains(w) && (600..=1_400).contains(t)), "{bursts:?}");
    }

    #[test]
    fn families_have_what_they_promise() {
        let by = |name: &str| (FAMILIES.iter().find(|f| f.name == name).expect("family").generate)(2);
        let nh = by("new-hardware");
        let b200: Vec<_> = nh.workers.iter().filter(|w| w.capabilities.hardware_class == crate::kinds::B200).collect();
        assert!(!b200.is_empty() && b200.iter().all(|w| w.join_s == Some(1_800.0)));
        let churn = by("churn");
        assert!(churn.workers.iter().any(|w| w.leave_s.is_some()) && churn.workers.iter().any(|w| w.join_s.is_some()));
        let flood = by("flood");
        let regression = flood.tasks.iter().filter(|t| t.request.producer == "regression").count();
        assert_eq!(regression, 800);
        assert!(flood.tasks.iter().any(|t| t.request.priority == 1));
        let soak = by("soak");
        let hot = soak.workers.iter().filter(|w| w.thermal.as_ref().is_some_and(|t| t.heat_c > 50.0)).count();
        let gpus = soak.workers.iter().filter(|w| !w.capabilities.gpus.is_empty()).count();
        assert!(2 * hot > gpus, "{hot} of {gpus}");
    }

    #[test]
    fn the_bound_holds_for_every_policy_on_every_family() {
        for (name, make) in small() {
            for seed in [1, 2] {
                let t = make(seed);
                t.check().unwrap_or_else(|e| panic!("{name}: {e}"));
                let bound = crate::lower_bound(&t);
                assert!(bound > 0.0, "{name}");
                for p in Policy::ALL {
                    let r = run(&t, &Config { policy: p, seed, ..Config::default() });
                    assert_eq!(r.unfinished, 0, "{name} {seed} {p}");
                    assert!(r.makespan_s + 1e-6 >= r.makespan_lower_bound_s, "{name} {seed} {p}: {r:?}");
                }
            }
        }
    }
}
