//! Hardware entering and leaving service (`join_s`, `leave_s` of a trace's
//! workers): a worker registers with the scheduler when it joins; when it
//! leaves it vanishes: its running attempts are dropped and it sends no more
//! heartbeats, so the scheduler's own supervision marks it offline and queues
//! its tasks again as lost.

use super::{secs_to_ms, Ev, Sim};

impl Sim<'_> {
    /// Registers the workers present from the start and queues the joins and
    /// leaves of the others.
    pub(super) fn schedule_presence(&mut self) {
        for (i, w) in self.trace.workers.iter().enumerate() {
            let join_ms = secs_to_ms(w.joins_at());
            if join_ms <= 0 {
                self.join(i, 0);
            } else {
                self.push(join_ms, Ev::Join(i));
            }
            if let Some(leave_s) = w.leave_s.filter(|s| s.is_finite()) {
                self.push(secs_to_ms(leave_s), Ev::Leave(i));
            }
        }
    }

    /// Worker `w` enters service: it registers and heartbeats from now on.
    pub(super) fn join(&mut self, w: usize, now: i64) {
        self.present[w] = true;
        self.state.register(self.trace.workers[w].capabilities.clone(), now);
    }

    /// Worker `w` leaves service: what it runs never ends, and it goes silent.
    pub(super) fn leave(&mut self, w: usize, _now: i64) {
        self.present[w] = false;
        self.drop_probes(w);
        for task in std::mem::take(&mut self.workers[w].running) {
            if let Some(a) = self.running.remove(&task) {
                // the dropped attempt's end event is still queued: the next
                // attempt's versions start past it
                self.next_version.insert(task, a.version + 1);
            }
        }
        let sw = &mut self.workers[w];
        sw.cpu_util = 0.0;
        sw.background = 0.0;
        sw.throttling = false;
    }
}

#[cfg(test)]
mod tests {
    use hwsched_placement::Policy;
    use hwsched_proto::v1::{CpuInfo, TaskRequest, WorkerCapabilities};

    use crate::{
        engine::{run, Config},
        trace::{TaskLine, Trace, WorkerLine},
    };

    fn worker(id: &str, join_s: Option<f64>, leave_s: Option<f64>) -> WorkerLine {
        WorkerLine {
            capabilities: WorkerCapabilities {
                worker_id: id.into(),
                hardware_class: "cpu:x".into(),
                slots: 1,
                cpu: Some(CpuInfo { logical_cores: 8, ..Default::default() }),
                memory_mb: 8192,
                ..Default::default()
            },
            thermal: None,
            background: vec![],
            join_s,
            leave_s,
            faults: vec![],
        }
    }

    fn tasks(n: u32, every_s: f64, runtime_s: f64) -> Vec<TaskLine> {
        (0..n)
            .map(|i| TaskLine {
                arrival_s: f64::from(i) * every_s,
                request: TaskRequest {
                    task_id: format!("t{i}"),
                    name: "t".into(),
                    command: vec!["true".into()],
                    ..Default::default()
                },
                runtime_s: [("cpu:x".to_string(), runtime_s)].into(),
                failure_rate: Default::default(),
                needs_memory_mb: None,
                straggler: None,
            })
            .collect()
    }

    #[test]
    fn a_worker_that_joins_later_gets_nothing_before_it_joins() {
        let t = Trace {
            workers: vec![worker("early", None, None), worker("late", Some(300.0), None)],
            tasks: tasks(20, 5.0, 40.0),
        };
        t.check().expect("valid");
        for p in Policy::ALL {
            let r = run(&t, &Config { policy: p, ..Config::default() });
            assert_eq!(r.unfinished, 0, "{p}");
            // one slot until 300 s: 7 tasks of 40 s at most end by then, and each of
            // the rest ends at 300 s + 40 s or later
            assert!(r.makespan_s >= 300.0 + 40.0, "{p}: {r:?}");
            assert!(r.makespan_s >= r.makespan_lower_bound_s, "{p}: {r:?}");
        }
    }

    #[test]
    fn tasks_on_a_worker_that_leaves_are_placed_again_and_end_elsewhere() {
        let t = Trace {
            workers: vec![
                worker("stays", None, None),
                worker("leaves", None, Some(100.0)),
                worker("joins", Some(50.0), None),
            ],
            tasks: tasks(12, 2.0, 80.0),
        };
        t.check().expect("valid");
        for p in Policy::ALL {
            let r = run(&t, &Config { policy: p, ..Config::default() });
            assert_eq!(r.unfinished, 0, "{p}: {r:?}");
            assert_eq!(r.succeeded + r.failed, r.tasks, "{p}: {r:?}");
            assert_eq!(r.succeeded, r.tasks, "{p}: {r:?}");
            // what ran on the leaver was started again elsewhere
            assert!(r.placements > r.tasks, "{p}: {r:?}");
            assert!(r.makespan_s >= r.makespan_lower_bound_s, "{p}: {r:?}");
        }
    }
}
