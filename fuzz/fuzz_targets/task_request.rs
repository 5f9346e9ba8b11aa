//! A submission as the scheduler receives it: the first byte picks the
//! encoding (protobuf or JSON), the rest is the payload. Whatever intake
//! accepts must also survive being split into its parts, queued and placed.
#![no_main]

use async_nats::HeaderMap;
use hwsched_placement::{group, state::State};
use hwsched_proto::v1::{TaskRecord, TaskState, WorkerCapabilities, WorkerHeartbeat, WorkerState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else { return };
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", if mode & 1 == 0 { "application/x-protobuf" } else { "application/json" });
    let Ok(task) = hwsched_scheduler::parse_submission(Some(&headers), payload) else { return };
    let mut st = State::with_aging(60_000);
    st.register(
        WorkerCapabilities {
            worker_id: "w1".into(),
            hardware_class: "cpu:x86_64".into(),
            slots: 4,
            memory_mb: 16_384,
            ..Default::default()
        },
        0,
    );
    st.heartbeat(
        WorkerHeartbeat {
            worker_id: "w1".into(),
            state: WorkerState::Active as i32,
            slots_total: 4,
            ..Default::default()
        },
        0,
    );
    let split = group::is_split(&task);
    let rec = TaskRecord { task: Some(task), state: TaskState::Queued as i32, ..Default::default() };
    if split {
        let (_, parts) = group::split(&rec, 0);
        for p in parts {
            st.insert(p, 0);
        }
    } else {
        st.insert(rec, 0);
    }
    let _ = st.plan(1, true);
});
