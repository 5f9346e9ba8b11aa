//! What workers send the scheduler (registrations and heartbeats, protobuf on
//! core NATS, from any process that can publish there): decoded and applied
//! to the scheduler's state, then a queued task is planned.
#![no_main]

use hwsched_placement::state::State;
use hwsched_proto::v1::{TaskRecord, TaskRequest, TaskState, WorkerCapabilities, WorkerHeartbeat};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut st = State::with_aging(60_000);
    let task = TaskRequest { task_id: "t".into(), command: vec!["true".into()], ..Default::default() };
    st.insert(TaskRecord { task: Some(task), state: TaskState::Queued as i32, ..Default::default() }, 0);
    // length-prefixed messages: one byte of kind and length, then the bytes
    let mut rest = data;
    let mut now = 0;
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (msg, next) = tail.split_at(n);
        rest = next;
        now += 100;
        if kind & 1 == 0 {
            if let Ok(caps) = WorkerCapabilities::decode(msg) {
                if hwsched_proto::is_valid_id(&caps.worker_id) {
                    st.register(caps, now);
                }
            }
        } else if let Ok(hb) = WorkerHeartbeat::decode(msg) {
            if hwsched_proto::is_valid_id(&hb.worker_id) {
                st.heartbeat(hb, now);
            }
        }
        let _ = st.plan(now, true);
        let _ = st.supervise(now, 10_000, 30_000);
    }
});
