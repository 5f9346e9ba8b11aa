//! Storing an attempt's whole output: each spool file streams into the
//! Object Store `hws_logs` as `<task_id>/<attempt>/stdout` and `.../stderr`.
//! An empty stream is not stored: the result says it wrote 0 bytes, and
//! `hwsched logs` prints nothing for it without asking the store (two
//! JetStream round trips per empty stream saved, most short tests print
//! nothing on one of them).

use std::io::Seek;

use async_nats::jetstream::object_store::ObjectStore;
use hwsched_bus::objects;
use hwsched_proto::v1::OutputStream;
use tokio::io::AsyncReadExt;

use super::capture::Captured;

/// Uploads both streams; `Err` says what was not stored. The caller bounds the time.
pub async fn store_logs(
    store: &ObjectStore,
    task_id: &str,
    attempt: u32,
    streams: [(OutputStream, &mut Captured); 2],
) -> Result<(), String> {
    for (stream, c) in streams {
        let name = objects::log_object(task_id, attempt, stream);
        if c.total == 0 && c.spool.is_none() && c.error.is_none() {
            continue;
        }
        let Some(spool) = c.spool.take() else {
            return Err(format!("{name}: {}", c.error.clone().unwrap_or_else(|| "no spool".into())));
        };
        upload(store, &name, spool, c.spooled).await.map_err(|e| format!("{name}: {e}"))?;
        if let Some(e) = &c.error {
            return Err(format!("{name} stored incomplete: {e}"));
        }
    }
    Ok(())
}

async fn upload(store: &ObjectStore, name: &str, mut spool: std::fs::File, len: u64) -> Result<(), String> {
    spool.rewind().map_err(|e| format!("rewind spool: {e}"))?;
    let mut reader = tokio::fs::File::from_std(spool).take(len);
    store.put(name, &mut reader).await.map_err(|e| e.to_string())?;
    Ok(())
}
