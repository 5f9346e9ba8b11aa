//! The active scheduler's state (`Scheduler`): the placement state, the
//! handles it writes through and what the loop keeps between inputs. Each
//! job adds its own `impl Scheduler` block in its file (submissions, results,
//! workers, placing, recovery, control).

use std::collections::HashMap;

use hwsched_bus::now_ms;
use hwsched_placement::state::State;
use hwsched_proto::v1::{TaskEventKind, TaskRecord};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{config::SchedulerConfig, io::Io};

// Submissions and results are acknowledged without waiting for the server to
// confirm: a lost ack only means a redelivery, which finds the task's record
// (a duplicate submission) or a stale attempt (a result already applied).

/// Submission or result records written at once.
pub(crate) const INTAKE_CONCURRENCY: usize = 256;

/// The active scheduler's state.
pub(crate) struct Scheduler {
    pub(crate) cfg: SchedulerConfig,
    pub(crate) io: Io,
    pub(crate) state: State,
    pub(crate) started_ms: i64,
    /// Recent passes' assignments being sent, oldest first; each yields the tasks not sent.
    pub(crate) sending: Vec<JoinHandle<Vec<crate::placing::Unsent>>>,
    /// Workers whose capabilities to ask for ([`crate::workers::ask_capabilities`]).
    pub(crate) caps_ask: mpsc::UnboundedSender<String>,
    /// When each worker's capabilities were last asked for.
    pub(crate) caps_asked: HashMap<String, i64>,
    /// When the queue metrics were last published.
    pub(crate) queue_published_ms: i64,
}

impl Scheduler {
    /// A scheduler that has just taken the lease: no tasks or workers yet.
    pub(crate) fn new(cfg: SchedulerConfig, io: Io, caps_ask: mpsc::UnboundedSender<String>) -> Self {
        Scheduler {
            state: placement_state(&cfg),
            cfg,
            io,
            started_ms: now_ms(),
            queue_published_ms: 0,
            sending: Vec::new(),
            caps_ask,
            caps_asked: Default::default(),
        }
    }

    pub(crate) async fn event(&self, rec: &TaskRecord, kind: TaskEventKind, reason: &str) {
        self.io.event(rec, kind, reason).await;
    }

    pub(crate) async fn save(&self, rec: &TaskRecord) {
        self.io.save(rec).await;
    }
}

/// An empty placement state with the settings of `cfg`.
fn placement_state(cfg: &SchedulerConfig) -> State {
    let mut st = State::with_aging((cfg.aging_s * 1000) as i64);
    st.cooldown_ms = (cfg.throttle_cooldown_s * 1000) as i64;
    st.weights = cfg.weights;
    st.policy = cfg.policy;
    st.fair_share = cfg.fair_share;
    st.explore_share = cfg.explore_share;
    st.retry = cfg.retry;
    st.hedge = cfg.hedge.clone();
    st.quarantine = hwsched_placement::quarantine::QuarantinePolicy {
        probe_command: cfg.probe_command.split_whitespace().map(String::from).collect(),
        ..cfg.quarantine.clone()
    };
    st.batch = cfg.batch.0;
    st.pack = cfg.pack;
    st
}
