//! The discrete-event engine. It drives the real scheduler state machine
//! (`hwsched_placement::state::State`: queue, aging, filters, scoring,
//! retries, thermal hysteresis) and the real learner model
//! (`hwsched_model::Model`) with simulated time: workers send heartbeats every
//! `heartbeat_ms` with their simulated temperature, throttling and CPU load;
//! results are observed by the model, which is published to the state on the
//! next heartbeat tick, as the learner would. Attempts fail by the trace's
//! faults and the scheduler's probes of quarantined workers run (`faults`).

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
};

use hwsched_model::Model;
use hwsched_placement::{
    state::{is_probe, Action, Completion, State},
    Demand, Heuristic, Policy, Weights,
};
use hwsched_proto::v1::{TaskRecord, WorkerHeartbeat, WorkerState};

use crate::{
    report::{FaultTally, Outcome, Report},
    rng::Rng,
    trace::Trace,
};

mod faults;
mod presence;

pub use faults::PROBE_S;

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Placement policy.
    pub policy: Policy,
    /// Seed of the failure draws.
    pub seed: u64,
    /// Heartbeat (and thermal step) period, ms.
    pub heartbeat_ms: i64,
    /// The scheduler's throttle cool-down, ms.
    pub cooldown_ms: i64,
    /// The scheduler's aging period, ms.
    pub aging_ms: i64,
    /// hwsched's score weights.
    pub weights: Weights,
    /// Interleave producers within a priority.
    pub fair_share: bool,
    /// Give up after this much simulated time, s.
    pub horizon_s: f64,
    /// Whether the learner's model reaches the scheduler (false: the ablation,
    /// every estimate is the task's declared duration).
    pub learn: bool,
    /// How often the learner publishes (refits and hands over) its model, ms.
    pub publish_ms: i64,
    /// The scheduler's exploration share.
    pub explore_share: f64,
    /// The scheduler's batch heuristic (`None`: the ablation, queue order).
    pub batch: Option<Heuristic>,
    /// Whether the scheduler corrects declared durations by what each
    /// producer's turned out to be (false: the ablation; off too without `learn`).
    pub trust: bool,
    /// Whether hwsched handles failures by what they are: quarantine of
    /// suspect workers and out-of-memory retries with more memory (false: the
    /// ablation). The other policies never do: see [`Config::handles_failures`].
    pub failure_handling: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: Policy::Hwsched,
            seed: 1,
            heartbeat_ms: 1_000,
            cooldown_ms: 30_000,
            aging_ms: 300_000,
            weights: Weights::default(),
            fair_share: false,
            horizon_s: 7.0 * 86_400.0,
            learn: true,
            publish_ms: 2_000,
            explore_share: hwsched_placement::DEFAULT_EXPLORE_SHARE,
            batch: Some(Heuristic::default()),
            trust: true,
            failure_handling: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick,
    Arrive(usize),
    End { task: usize, attempt: u32, version: u64 },
    Join(usize),
    Leave(usize),
    ProbeEnd(String),
}

#[derive(Debug)]
struct SimWorker {
    id: String,
    class: String,
    slots: u32,
    cores: f64,
    temp: f64,
    throttling: bool,
    cpu_util: f64,
    /// CPU load of other tenants, percent (part of `cpu_util`).
    background: f64,
    speed: f64,
    running: Vec<usize>,
    /// Probes it runs (task ids).
    probes: Vec<String>,
}

#[derive(Debug)]
struct Attempt {
    attempt: u32,
    worker: usize,
    started_ms: i64,
    last_ms: i64,
    /// Full-speed seconds of work left.
    work_left_s: f64,
    speed: f64,
    /// How it ends.
    fate: faults::Fate,
    /// The memory it was granted, MB (its request's `memory_mb`).
    grant_mb: i64,
    version: u64,
    predicted_s: f64,
    /// The model's age bucket of the pair when placed.
    pair_age: &'static str,
}

impl Config {
    /// The run's name in reports: the policy, and which of hwsched's parts
    /// are off ("hwsched-no-learner", "hwsched-no-batch").
    pub fn label(&self) -> String {
        let mut label = self.policy.name().to_string();
        if !self.learn {
            label.push_str("-no-learner");
        }
        if self.batch.is_none() && self.policy == Policy::Hwsched {
            label.push_str("-no-batch");
        }
        if !self.trust && self.policy == Policy::Hwsched {
            label.push_str("-no-trust");
        }
        if !self.failure_handling && self.policy == Policy::Hwsched {
            label.push_str("-failure-blind");
        }
        label
    }

    /// Whether the scheduler quarantines suspect workers and retries an
    /// attempt that ran out of memory with more memory. A modelling choice:
    /// only hwsched does. The baselines stand for the schedulers hwsched
    /// replaces or is compared with, which have neither: they run with
    /// quarantine off and a category-blind retry (an out-of-memory attempt is
    /// retried with the same memory, like any failure).
    pub fn handles_failures(&self) -> bool {
        self.failure_handling && self.policy == Policy::Hwsched
    }
}

/// Runs one policy over a trace.
pub fn run(trace: &Trace, cfg: &Config) -> Report {
    Sim::new(trace, cfg).run()
}

struct Sim<'t> {
    trace: &'t Trace,
    cfg: Config,
    rng: Rng,
    state: State,
    model: Model,
    published: u64,
    next_publish_ms: i64,
    workers: Vec<SimWorker>,
    by_id: HashMap<String, usize>,
    task_index: HashMap<String, usize>,
    events: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    running: HashMap<usize, Attempt>,
    first_start_ms: BTreeMap<usize, i64>,
    ended_ms: BTreeMap<usize, (i64, bool)>,
    rejected: usize,
    placements: usize,
    retries: usize,
    throttled: usize,
    overloaded: usize,
    predicted: usize,
    explored: usize,
    /// (ended at, absolute percentage error, the pair's runs when placed).
    errors: Vec<(i64, f64, &'static str)>,
    busy_slot_ms: BTreeMap<String, f64>,
    open: usize,
    /// Whether each worker is in service now (see `presence`).
    present: Vec<bool>,
    /// First version of a task's next attempt, past those dropped on a leave.
    next_version: HashMap<usize, u64>,
    /// Failures, probes and quarantines so far.
    tally: FaultTally,
    /// Probes running, by task id (looked up, never walked).
    probe_runs: HashMap<String, faults::ProbeRun>,
}

impl<'t> Sim<'t> {
    fn new(trace: &'t Trace, cfg: &Config) -> Self {
        let mut state = State::with_aging(cfg.aging_ms);
        state.cooldown_ms = cfg.cooldown_ms;
        state.policy = cfg.policy;
        state.weights = cfg.weights;
        state.fair_share = cfg.fair_share;
        state.explore_share = cfg.explore_share;
        state.batch = cfg.batch;
        // without the learner nothing is learned: no trust in declarations either
        state.trust_declarations = cfg.trust && cfg.learn;
        if !cfg.handles_failures() {
            // the baselines' scheduler has no health tracking and a category-blind retry
            state.quarantine.enabled = false;
            state.retry.oom_memory_factor = 1.0;
        }
        let workers: Vec<SimWorker> = trace
            .workers
            .iter()
            .map(|w| {
                let c = &w.capabilities;
                SimWorker {
                    id: c.worker_id.clone(),
                    class: c.hardware_class.clone(),
                    slots: c.slots.max(1),
                    cores: f64::from(c.cpu.as_ref().map_or(1, |c| c.logical_cores).max(1)),
                    temp: w.thermal.as_ref().map_or(40.0, |t| t.ambient_c),
                    throttling: false,
                    cpu_util: 0.0,
                    background: 0.0,
                    speed: 1.0,
                    running: Vec::new(),
                    probes: Vec::new(),
                }
            })
            .collect();
        let by_id = workers.iter().enumerate().map(|(i, w)| (w.id.clone(), i)).collect();
        let task_index = trace.tasks.iter().enumerate().map(|(i, t)| (t.request.task_id.clone(), i)).collect();
        let mut sim = Sim {
            trace,
            cfg: cfg.clone(),
            rng: Rng::new(cfg.seed),
            state,
            model: Model::default(),
            published: 0,
            next_publish_ms: 0,
            workers,
            by_id,
            task_index,
            events: BinaryHeap::new(),
            seq: 0,
            running: HashMap::new(),
            first_start_ms: BTreeMap::new(),
            ended_ms: BTreeMap::new(),
            rejected: 0,
            placements: 0,
            retries: 0,
            throttled: 0,
            overloaded: 0,
            predicted: 0,
            explored: 0,
            errors: Vec::new(),
            busy_slot_ms: BTreeMap::new(),
            open: trace.tasks.len(),
            present: vec![false; trace.workers.len()],
            next_version: HashMap::new(),
            tally: FaultTally::default(),
            probe_runs: HashMap::new(),
        };
        sim.schedule_presence();
        for (i, t) in trace.tasks.iter().enumerate() {
            sim.push(secs_to_ms(t.arrival_s), Ev::Arrive(i));
        }
        sim.push(0, Ev::Tick);
        sim
    }

    fn push(&mut self, at_ms: i64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at_ms, self.seq, ev)));
    }

    fn run(mut self) -> Report {
        let now = self.simulate();
        self.report(now)
    }

    /// Runs the events until every task ended or the horizon; the time it stopped, ms.
    fn simulate(&mut self) -> i64 {
        let horizon_ms = secs_to_ms(self.cfg.horizon_s);
        let mut now = 0;
        while self.open > 0 {
            let Some(Reverse((at, _, _))) = self.events.peek() else { break };
            now = *at;
            if now > horizon_ms {
                break;
            }
            while let Some(Reverse((at, _, _))) = self.events.peek() {
                if *at != now {
                    break;
                }
                let Some(Reverse((_, _, ev))) = self.events.pop() else { break };
                match ev {
                    Ev::Tick => self.tick(now),
                    Ev::Arrive(i) => self.arrive(i, now),
                    Ev::End { task, attempt, version } => self.end(task, attempt, version, now),
                    Ev::Join(w) => self.join(w, now),
                    Ev::Leave(w) => self.leave(w, now),
                    Ev::ProbeEnd(id) => self.end_probe(&id, now),
                }
            }
            let actions = self.state.plan(now, true);
            for a in actions {
                self.act(a, now);
            }
            self.count_health_events(now);
        }
        now
    }

    fn arrive(&mut self, i: usize, now: i64) {
        let t = &self.trace.tasks[i];
        let mut req = t.request.clone();
        req.submitted_at_ms = now;
        self.state.insert(
            TaskRecord {
                task: Some(req),
                state: hwsched_proto::v1::TaskState::Queued as i32,
                queued_at_ms: now,
                updated_at_ms: now,
                ..Default::default()
            },
            now,
        );
    }

    fn act(&mut self, a: Action, now: i64) {
        match a {
            Action::Reject(rec) => {
                if let Some(i) = rec.task.as_ref().and_then(|t| self.task_index.get(&t.task_id)).copied() {
                    self.rejected += 1;
                    self.ended_ms.insert(i, (now, false));
                    self.open -= 1;
                }
            }
            // The simulator runs one copy of a task at a time, with hedging off (the
            // state's default): a copy is undone, never simulated.
            Action::Hedge(rec) => {
                if let Some(t) = rec.task.as_ref() {
                    self.state.unhedge(&t.task_id, now);
                }
            }
            Action::Assign(rec) if is_probe(&rec) => self.start_probe(&rec, now),
            Action::Assign(rec) => {
                let Some(task) = rec.task.as_ref().and_then(|t| self.task_index.get(&t.task_id)).copied() else {
                    return;
                };
                // a worker gone before the scheduler noticed: supervision re-places it
                let Some(w) = self.by_id.get(&rec.worker_id).copied().filter(|w| self.present[*w]) else { return };
                // what it was granted: its request as the scheduler holds it (out-of-memory retries raise it)
                let grant_mb = rec.task.as_ref().and_then(|t| t.requirements.as_ref()).map_or(0, |r| r.memory_mb);
                let fate = self.fate(task, w, grant_mb, now);
                let work = fate.work_s;
                let class = &self.workers[w].class;
                self.placements += 1;
                if self.workers[w].throttling {
                    self.throttled += 1;
                }
                // others' load, what the overload rule protects tests from
                if self.workers[w].background >= hwsched_placement::fit::CRITICAL_PCT {
                    self.overloaded += 1;
                }
                if rec.predicted_runtime_s > 0.0 {
                    self.predicted += 1;
                }
                // the decision's reason names its components, "explore" among them when it explored
                if rec.reason.contains(", explore ") {
                    self.explored += 1;
                }
                self.first_start_ms.entry(task).or_insert(now);
                let speed = self.workers[w].speed;
                let version = self.next_version.get(&task).copied().unwrap_or(0);
                let at = Attempt {
                    attempt: rec.attempt,
                    worker: w,
                    started_ms: now,
                    last_ms: now,
                    work_left_s: work,
                    speed,
                    fate,
                    grant_mb,
                    version,
                    predicted_s: rec.predicted_runtime_s,
                    pair_age: self
                        .state
                        .model
                        .as_ref()
                        .and_then(|m| {
                            m.predict(&hwsched_model::task_workload_key(line_request(self.trace, task)), class)
                        })
                        .map_or("none", |p| hwsched_model::age_bucket(&p)),
                };
                self.push(now + secs_to_ms(work / speed), Ev::End { task, attempt: rec.attempt, version });
                self.running.insert(task, at);
                self.workers[w].running.push(task);
                let cores = Demand::of(line_request(self.trace, task)).cpu_cores;
                let sw = &mut self.workers[w];
                sw.cpu_util = (sw.cpu_util + 100.0 * cores / sw.cores).min(100.0);
            }
        }
    }

    fn end(&mut self, task: usize, attempt: u32, version: u64, now: i64) {
        let current = self.running.get(&task).is_some_and(|a| a.attempt == attempt && a.version == version);
        if !current {
            return;
        }
        let Some(a) = self.running.remove(&task) else { return };
        self.workers[a.worker].running.retain(|t| *t != task);
        let res = self.result_of(task, &a, now);
        let duration_s = res.duration_s;
        self.tally.attempt(task, a.fate.failure, a.fate.worker_fault, now - a.started_ms);
        if a.fate.failure.is_none() && a.predicted_s > 0.0 && duration_s > 0.0 {
            self.errors.push((now, (a.predicted_s - duration_s).abs() / duration_s, a.pair_age));
        }
        self.model.observe(&res);
        match self.state.complete(&res, now) {
            Completion::Done(rec) => {
                self.ended_ms.insert(task, (now, rec.state() == hwsched_proto::v1::TaskState::Succeeded));
                self.open -= 1;
            }
            Completion::Retry(_) => self.retries += 1,
            // (only hedged tasks continue, and none are here)
            Completion::Continues(_) | Completion::Stale => {}
        }
    }

    fn tick(&mut self, now: i64) {
        let dt = self.cfg.heartbeat_ms as f64 / 1000.0;
        if self.cfg.learn && self.model.version() != self.published && now >= self.next_publish_ms {
            self.published = self.model.version();
            self.next_publish_ms = now + self.cfg.publish_ms;
            self.model.refit();
            self.state.model = Some(self.model.clone());
        }
        for i in 0..self.workers.len() {
            if !self.present[i] {
                continue;
            }
            let line = &self.trace.workers[i];
            let w = &mut self.workers[i];
            let busy = w.running.len() as f64 / f64::from(w.slots);
            *self.busy_slot_ms.entry(w.class.clone()).or_default() += w.running.len() as f64 * dt;
            if let Some(th) = &line.thermal {
                let target = th.ambient_c + th.heat_c * busy;
                w.temp += (target - w.temp) * (1.0 - (-dt / th.tau_s.max(1e-3)).exp());
                if w.temp >= th.throttle_c {
                    w.throttling = true;
                } else if w.temp < th.throttle_c - 5.0 {
                    w.throttling = false;
                }
            }
            let t_s = now as f64 / 1000.0;
            let background: f64 =
                line.background.iter().filter(|b| b.from_s <= t_s && t_s < b.to_s).map(|b| b.cpu_pct).sum();
            let ours: f64 =
                w.running.iter().map(|t| 100.0 * Demand::of(line_request(self.trace, *t)).cpu_cores / w.cores).sum();
            w.cpu_util = (background + ours).min(100.0);
            w.background = background;
            let overloaded = background >= hwsched_placement::fit::CRITICAL_PCT;
            let speed = if w.throttling { 0.5 } else { 1.0 } * if overloaded { 0.5 } else { 1.0 };
            if (speed - w.speed).abs() > 1e-9 {
                w.speed = speed;
                let running = w.running.clone();
                for t in running {
                    if let Some(a) = self.running.get_mut(&t) {
                        a.work_left_s -= (now - a.last_ms) as f64 / 1000.0 * a.speed;
                        a.work_left_s = a.work_left_s.max(0.0);
                        a.last_ms = now;
                        a.speed = speed;
                        a.version += 1;
                        let ev = Ev::End { task: t, attempt: a.attempt, version: a.version };
                        let at = now + secs_to_ms(a.work_left_s / speed);
                        self.seq += 1;
                        self.events.push(Reverse((at, self.seq, ev)));
                    }
                }
            }
            let w = &self.workers[i];
            let caps = &line.capabilities;
            let tasks = w.running.iter().map(|t| self.trace.tasks[*t].request.task_id.clone());
            self.state.heartbeat(
                WorkerHeartbeat {
                    worker_id: w.id.clone(),
                    state: WorkerState::Active as i32,
                    capabilities_revision: caps.revision,
                    slots_total: w.slots,
                    slots_used: (w.running.len() + w.probes.len()) as u32,
                    running_task_ids: tasks.chain(w.probes.iter().cloned()).collect(),
                    cpu_util_pct: w.cpu_util,
                    // what a monitor measures of its own tests
                    tasks_cpu_util_pct: (w.cpu_util - w.background).max(0.0),
                    max_temp_c: w.temp,
                    throttling: w.throttling,
                    timestamp_ms: now,
                    interval_ms: self.cfg.heartbeat_ms as u32,
                    ..Default::default()
                },
                now,
            );
        }
        for c in self.state.supervise(now, 10 * self.cfg.heartbeat_ms, 30_000) {
            if let Completion::Done(rec) = c {
                if let Some(i) = rec.task.as_ref().and_then(|t| self.task_index.get(&t.task_id)).copied() {
                    self.ended_ms.insert(i, (now, false));
                    self.open -= 1;
                }
            }
        }
        if self.open > 0 {
            self.push(now + self.cfg.heartbeat_ms, Ev::Tick);
        }
    }

    fn report(&self, now: i64) -> Report {
        let mut slots_by_class: BTreeMap<String, f64> = BTreeMap::new();
        for w in &self.workers {
            *slots_by_class.entry(w.class.clone()).or_default() += f64::from(w.slots);
        }
        Report::new(&Outcome {
            trace: self.trace,
            policy: self.cfg.label(),
            now_ms: now,
            first_start_ms: &self.first_start_ms,
            ended_ms: &self.ended_ms,
            slots_by_class,
            busy_slot_ms: &self.busy_slot_ms,
            errors: &self.errors,
            rejected: self.rejected,
            open: self.open,
            placements: self.placements,
            retries: self.retries,
            throttled: self.throttled,
            overloaded: self.overloaded,
            predicted: self.predicted,
            explored: self.explored,
            faults: &self.tally,
            flaky: self.model.flaky_tests().into_iter().map(|t| t.workload_key).collect(),
        })
    }
}

fn line_request(trace: &Trace, task: usize) -> &hwsched_proto::v1::TaskRequest {
    &trace.tasks[task].request
}

fn secs_to_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

#[cfg(test)]
mod tests;
