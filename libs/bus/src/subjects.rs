//! Public subject, stream and bucket names. The subject names are part of the
//! product's contract (producers and dashboards use them): change them never.

/// Every name derived from one subject prefix (default `hws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    /// Upper-cased, dots replaced: `hws` -> `HWS`, `ci.hws` -> `CI_HWS`.
    stream_prefix: String,
    /// Dots replaced: `ci.hws` -> `ci_hws`.
    bucket_prefix: String,
}

impl Subjects {
    /// Names under `prefix`, which must already be validated
    /// (`hwsched_config::validate_subject_prefix`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            stream_prefix: prefix.replace('.', "_").to_uppercase(),
            bucket_prefix: prefix.replace('.', "_"),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `hws.tasks.submit`: task requests from producers.
    pub fn tasks_submit(&self) -> String {
        format!("{}.tasks.submit", self.prefix)
    }
    /// `hws.tasks.rejected`: invalid submissions with their reasons.
    pub fn tasks_rejected(&self) -> String {
        format!("{}.tasks.rejected", self.prefix)
    }
    /// `hws.metrics.<worker_id>`.
    pub fn metrics(&self, worker_id: &str) -> String {
        format!("{}.metrics.{worker_id}", self.prefix)
    }
    /// `hws.metrics.>`.
    pub fn metrics_all(&self) -> String {
        format!("{}.metrics.>", self.prefix)
    }
    /// `hws.workers.<worker_id>.register`: capabilities.
    pub fn worker_register(&self, worker_id: &str) -> String {
        format!("{}.workers.{worker_id}.register", self.prefix)
    }
    /// `hws.workers.<worker_id>.heartbeat`.
    pub fn worker_heartbeat(&self, worker_id: &str) -> String {
        format!("{}.workers.{worker_id}.heartbeat", self.prefix)
    }
    /// `hws.workers.<worker_id>.capabilities`: request/reply, answered by the monitor.
    pub fn worker_capabilities(&self, worker_id: &str) -> String {
        format!("{}.workers.{worker_id}.capabilities", self.prefix)
    }
    /// `hws.workers.*.register`.
    pub fn workers_register_all(&self) -> String {
        format!("{}.workers.*.register", self.prefix)
    }
    /// `hws.workers.*.heartbeat`.
    pub fn workers_heartbeat_all(&self) -> String {
        format!("{}.workers.*.heartbeat", self.prefix)
    }
    /// `hws.assign.<worker_id>`.
    pub fn assign(&self, worker_id: &str) -> String {
        format!("{}.assign.{worker_id}", self.prefix)
    }
    /// `hws.events.<task_id>`.
    pub fn events(&self, task_id: &str) -> String {
        format!("{}.events.{task_id}", self.prefix)
    }
    /// `hws.events.>`.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }
    /// `hws.results.<worker_id>.<task_id>`: a result on the subject of the worker
    /// that ran it, so NATS permissions let a worker publish only its own.
    pub fn results(&self, worker_id: &str, task_id: &str) -> String {
        format!("{}.results.{worker_id}.{task_id}", self.prefix)
    }
    /// `hws.results.*.<task_id>`: every result of a task, whoever ran it.
    pub fn results_of(&self, task_id: &str) -> String {
        format!("{}.results.*.{task_id}", self.prefix)
    }
    /// The worker a result subject names (`None`: not a result subject).
    pub fn result_worker<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".results.")?;
        let (worker, task) = rest.split_once('.')?;
        (!worker.is_empty() && !task.is_empty() && !task.contains('.')).then_some(worker)
    }
    /// `hws.results.>`.
    pub fn results_all(&self) -> String {
        format!("{}.results.>", self.prefix)
    }
    /// `hws.alerts.<severity>`.
    pub fn alerts(&self, severity: &str) -> String {
        format!("{}.alerts.{severity}", self.prefix)
    }
    /// `hws.alerts.>`.
    pub fn alerts_all(&self) -> String {
        format!("{}.alerts.>", self.prefix)
    }
    /// `hws.deadletter.<who>`: a message `who` (a service, or a worker id)
    /// could not use, kept with the reason (`Bus::dead_letter`).
    pub fn dead_letter(&self, who: &str) -> String {
        format!("{}.deadletter.{who}", self.prefix)
    }
    /// Every dead letter.
    pub fn dead_letters_all(&self) -> String {
        format!("{}.deadletter.>", self.prefix)
    }
    /// `hws.model.updated`: the learner stored a new model snapshot (`ModelUpdate`).
    pub fn model_updated(&self) -> String {
        format!("{}.model.updated", self.prefix)
    }
    /// `hws.model.health.<worker_id>`: a worker became degraded or recovered (`WorkerHealth`).
    pub fn worker_health(&self, worker_id: &str) -> String {
        format!("{}.model.health.{worker_id}", self.prefix)
    }
    /// `hws.control.<command>` (cancel, drain, silence).
    pub fn control(&self, command: &str) -> String {
        format!("{}.control.{command}", self.prefix)
    }

    /// `hws.logs.<task_id>.<attempt>`: live output batches of one attempt.
    pub fn logs(&self, task_id: &str, attempt: u32) -> String {
        format!("{}.logs.{task_id}.{attempt}", self.prefix)
    }
    /// `hws.logs.<task_id>.*`: the live output of every attempt of a task.
    pub fn logs_of(&self, task_id: &str) -> String {
        format!("{}.logs.{task_id}.*", self.prefix)
    }
    /// `hws.logs.>`.
    pub fn logs_all(&self) -> String {
        format!("{}.logs.>", self.prefix)
    }

    /// JetStream stream name for one of [`Stream`].
    pub fn stream(&self, s: Stream) -> String {
        format!("{}_{}", self.stream_prefix, s.suffix())
    }

    /// KV bucket holding the scheduler's task records.
    pub fn tasks_bucket(&self) -> String {
        format!("{}_tasks", self.bucket_prefix)
    }
    /// KV bucket where monitors journal the attempts they started (key `<task_id>.<attempt>`).
    pub fn attempts_bucket(&self) -> String {
        format!("{}_attempts", self.bucket_prefix)
    }
    /// `hws.health.quarantined`: the scheduler announces each worker it
    /// quarantines (core NATS; the learner blames the worker's failures).
    pub fn health_quarantined(&self) -> String {
        format!("{}.health.quarantined", self.prefix)
    }
    /// `hws.control.cancel`: cancel a task (request/reply to the scheduler; monitors listen too).
    pub fn control_cancel(&self) -> String {
        self.control("cancel")
    }
    /// `hws.control.quarantine`: quarantined workers, list and release (request/reply to the active scheduler).
    pub fn control_quarantine(&self) -> String {
        self.control("quarantine")
    }
    /// `hws.control.explain`: request/reply to the active scheduler.
    pub fn control_explain(&self) -> String {
        self.control("explain")
    }
    /// `hws.control.queue`: request/reply to the active scheduler.
    pub fn control_queue(&self) -> String {
        self.control("queue")
    }
    /// `hws.control.tasks`: request/reply to the active scheduler.
    pub fn control_tasks(&self) -> String {
        self.control("tasks")
    }
    /// `hws.workers.<id>.drain`: request/reply to that worker's monitor.
    pub fn worker_drain(&self, worker_id: &str) -> String {
        format!("{}.workers.{worker_id}.drain", self.prefix)
    }
    /// KV bucket of drained workers (key: worker id), read by a monitor at start.
    pub fn drains_bucket(&self) -> String {
        format!("{}_drains", self.bucket_prefix)
    }
    /// KV bucket of muted tests (key: mute id), read by `hwsched submit --wait`.
    pub fn mutes_bucket(&self) -> String {
        format!("{}_mutes", self.bucket_prefix)
    }
    /// KV bucket of leases (the active scheduler's), entries expiring unless renewed.
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.bucket_prefix)
    }
    /// KV bucket holding the learner's model snapshot.
    pub fn model_bucket(&self) -> String {
        format!("{}_model", self.bucket_prefix)
    }
    /// KV bucket of the alerts firing now (key: fingerprint), so a restarted
    /// alerting service does not notify them again.
    pub fn alerts_bucket(&self) -> String {
        format!("{}_alerts", self.bucket_prefix)
    }
    /// Object Store of bundles, named by digest (`sha256:<hex>`).
    pub fn bundles_bucket(&self) -> String {
        format!("{}_bundles", self.bucket_prefix)
    }
    /// Object Store of whole attempt outputs: `<task_id>/<attempt>/stdout|stderr`.
    pub fn logs_bucket(&self) -> String {
        format!("{}_logs", self.bucket_prefix)
    }
    /// Object Store of files attempts produced: `<task_id>/<attempt>/<path>`.
    pub fn artifacts_bucket(&self) -> String {
        format!("{}_artifacts", self.bucket_prefix)
    }
    /// KV bucket of alert silences (key: silence id), shared by every alerting
    /// replica and kept across restarts.
    pub fn silences_bucket(&self) -> String {
        format!("{}_silences", self.bucket_prefix)
    }
}

/// The JetStream streams hwsched provisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Submitted tasks (work queue, deduplicated by task id).
    Tasks,
    /// Rejected submissions.
    Rejected,
    /// Assignments to workers (work queue, one consumer per worker).
    Assign,
    /// Execution results.
    Results,
    /// Lifecycle events.
    Events,
    /// Alerts.
    Alerts,
    /// Hardware metrics (buffer for the recorder).
    Metrics,
    /// Messages a service could not use, with the reason.
    DeadLetter,
    /// Live output batches of running attempts (short retention, for followers).
    Logs,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 9] = [
        Stream::Tasks,
        Stream::Rejected,
        Stream::Assign,
        Stream::Results,
        Stream::Events,
        Stream::Alerts,
        Stream::Metrics,
        Stream::DeadLetter,
        Stream::Logs,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Stream::Tasks => "TASKS",
            Stream::Rejected => "REJECTED",
            Stream::Assign => "ASSIGN",
            Stream::Results => "RESULTS",
            Stream::Events => "EVENTS",
            Stream::Alerts => "ALERTS",
            Stream::Metrics => "METRICS",
            Stream::DeadLetter => "DEADLETTER",
            Stream::Logs => "LOGS",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_names_under_default_prefix() {
        let s = Subjects::new("hws");
        assert_eq!(s.tasks_submit(), "hws.tasks.submit");
        assert_eq!(s.tasks_rejected(), "hws.tasks.rejected");
        assert_eq!(s.metrics("node_1"), "hws.metrics.node_1");
        assert_eq!(s.worker_heartbeat("n"), "hws.workers.n.heartbeat");
        assert_eq!(s.assign("n"), "hws.assign.n");
        assert_eq!(s.events("t"), "hws.events.t");
        assert_eq!(s.results("w1", "t"), "hws.results.w1.t");
        assert_eq!(s.results_of("t"), "hws.results.*.t");
        assert_eq!(s.result_worker("hws.results.w1.t"), Some("w1"));
        assert_eq!(s.result_worker("hws.results.t"), None);
        assert_eq!(s.result_worker("hws.events.w1.t"), None);
        assert_eq!(s.alerts("critical"), "hws.alerts.critical");
        assert_eq!(s.control("cancel"), "hws.control.cancel");
        assert_eq!(s.health_quarantined(), "hws.health.quarantined");
        assert_eq!(s.stream(Stream::Tasks), "HWS_TASKS");
        assert_eq!(s.dead_letter("recorder"), "hws.deadletter.recorder");
        assert_eq!(s.stream(Stream::DeadLetter), "HWS_DEADLETTER");
        assert_eq!(s.model_bucket(), "hws_model");
        assert_eq!(s.alerts_bucket(), "hws_alerts");
        assert_eq!(s.silences_bucket(), "hws_silences");
        assert_eq!(s.logs("t", 2), "hws.logs.t.2");
        assert_eq!(s.logs_of("t"), "hws.logs.t.*");
        assert_eq!(s.stream(Stream::Logs), "HWS_LOGS");
        assert_eq!(
            (s.bundles_bucket(), s.logs_bucket(), s.artifacts_bucket()),
            ("hws_bundles".into(), "hws_logs".into(), "hws_artifacts".into())
        );
    }

    #[test]
    fn dotted_prefix_makes_valid_stream_and_bucket_names() {
        let s = Subjects::new("ci.hws");
        assert_eq!(s.tasks_submit(), "ci.hws.tasks.submit");
        assert_eq!(s.stream(Stream::Metrics), "CI_HWS_METRICS");
        assert_eq!(s.tasks_bucket(), "ci_hws_tasks");
    }
}
