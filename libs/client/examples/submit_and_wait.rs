//! Submits one command as a task and prints what happens to it until it ends.
//!
//! ```sh
//! cargo run -p hwsched-client --example submit_and_wait -- nats://127.0.0.1:4222 pytest tests/test_x.py
//! ```

use hwsched_client::{Client, Update};
use hwsched_config::NatsConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let argv: Vec<String> = args.collect();
    if argv.is_empty() {
        return Err("usage: submit_and_wait NATS_URL COMMAND [ARG...]".into());
    }
    let client = Client::connect(&NatsConfig::new(&url)).await?;
    let mut task = hwsched_client::task(argv);
    task.timeout_s = 600;
    let mut run = client.submit(vec![task]).await?;
    while let Some(update) = run.next().await? {
        match update {
            Update::Accepted { task_id } => println!("{task_id} accepted"),
            Update::Rejected { task_id, reasons } => println!("{task_id} rejected: {}", reasons.join("; ")),
            Update::Duplicate { task_id } => println!("{task_id} was submitted before"),
            Update::Event(ev) => println!("{} {:?} {}", ev.task_id, ev.kind(), ev.worker_id),
            Update::Finished(f) => {
                println!("{} ended {:?} on {} in {:.1}s", f.task_id, f.status, f.worker_id, f.duration_s);
                if let Some(r) = &f.result {
                    print!("{}", r.stdout_tail);
                }
            }
        }
    }
    Ok(())
}
