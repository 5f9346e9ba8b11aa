//! Runs worker `WORKER_ID`'s assignments in this process instead of the
//! monitor's process runner: here each task's argv is run with
//! `std::process::Command`, but it could be a phone, a browser or an emulator.
//! Start `hwsched monitor --observe-only --worker-id WORKER_ID` beside it.
//!
//! ```sh
//! cargo run -p hwsched-client --example external_executor -- nats://127.0.0.1:4222 WORKER_ID
//! ```

use hwsched_client::{Client, Outcome};
use hwsched_config::NatsConfig;
use hwsched_proto::v1::TaskStatus;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let worker_id = args.next().ok_or("usage: external_executor NATS_URL WORKER_ID")?;
    let client = Client::connect(&NatsConfig::new(&url)).await?;
    let mut exec = client.executor(&worker_id, 1).await?;
    while let Some(a) = exec.next().await? {
        a.started().await;
        let (program, rest) = a.task.command.split_first().ok_or("empty command")?;
        let out = tokio::process::Command::new(program).args(rest).envs(&a.task.env).output().await;
        let outcome = match out {
            Ok(o) => Outcome {
                status: if o.status.success() { TaskStatus::Succeeded } else { TaskStatus::Failed },
                exit_code: o.status.code().unwrap_or(-1),
                error: String::new(),
                stdout_tail: tail(&o.stdout),
                stderr_tail: tail(&o.stderr),
            },
            Err(e) => {
                Outcome { status: TaskStatus::Error, ..Outcome::failed(-1, &format!("cannot start {program}: {e}")) }
            }
        };
        println!("{} attempt {}: {:?}", a.task.task_id, a.attempt, outcome.status);
        a.finish(outcome).await?;
    }
    Ok(())
}

/// The last 4 KiB of some output, as text.
fn tail(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4096)..]).into_owned()
}
