//! `hwsched submit --bundle DIR`: packs and uploads the directory (once per
//! digest) and names it on every task that names no bundle of its own.

use std::path::Path;

use hwsched_client::Client;
use hwsched_proto::v1::TaskRequest;

/// With `dir`, uploads its bundle and attaches the digest to `tasks`; prints
/// the digest and whether it was uploaded (on stderr: stdout carries the updates).
pub async fn ship(client: &Client, dir: Option<&Path>, tasks: &mut [TaskRequest]) -> anyhow::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let started = std::time::Instant::now();
    let b = client.upload_bundle(dir).await?;
    let n = hwsched_client::bundle::attach(tasks, &b.digest);
    eprintln!(
        "bundle {} ({} bytes, {} entries) {} in {:.2}s, named by {n} task(s)",
        b.digest,
        b.bytes,
        b.entries,
        if b.uploaded { "uploaded" } else { "already stored" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
