//! `hwsched logs TASK [--attempt N] [-f]`: the stored output of an attempt
//! (stdout to stdout, stderr to stderr), or with `-f` the live output from
//! the attempt's start until the task ends. Also the task-prefixed lines
//! `hwsched submit --wait --logs` prints.

use std::collections::{HashMap, HashSet};

use clap::Args;
use futures::{stream::BoxStream, FutureExt, StreamExt};
use hwsched_client::{exit, Client};
use hwsched_proto::v1::{LogChunk, OutputStream};
use tokio::io::AsyncWriteExt;

/// `hwsched logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Task id.
    task_id: String,
    /// Attempt (default: the latest that has a result; with -f every attempt).
    #[arg(long)]
    attempt: Option<u32>,
    /// Follow the live output from the attempt's start until the task ends.
    #[arg(short = 'f', long)]
    follow: bool,
}

/// Prints stored or live output.
pub async fn run(client: &Client, args: LogsArgs) -> anyhow::Result<u8> {
    if args.follow {
        return follow(client, &args.task_id, args.attempt).await;
    }
    let r = client.attempt_result(&args.task_id, args.attempt).await?;
    if !r.logs_stored {
        eprintln!(
            "attempt {} of {}: its output was not stored ({}); the last bytes on its result:",
            r.attempt,
            r.task_id,
            if r.error.is_empty() { "stored before this version of the monitor" } else { &r.error }
        );
        print!("{}", r.stdout_tail);
        eprint!("{}", r.stderr_tail);
        return Ok(exit::FAILURE);
    }
    let (mut out, mut err) = std_streams()?;
    client.stored_log(&r, OutputStream::Stdout, &mut out).await?;
    out.flush().await?;
    client.stored_log(&r, OutputStream::Stderr, &mut err).await?;
    err.flush().await?;
    Ok(exit::OK)
}

/// This process's stdout and stderr as async files (copies of the descriptors).
fn std_streams() -> anyhow::Result<(tokio::fs::File, tokio::fs::File)> {
    use std::os::fd::AsFd;
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map(|o| tokio::fs::File::from_std(o.into()));
    Ok((dup(std::io::stdout().as_fd())?, dup(std::io::stderr().as_fd())?))
}

async fn follow(client: &Client, task_id: &str, attempt: Option<u32>) -> anyhow::Result<u8> {
    let mut f = client.follow_logs(task_id, attempt).await?;
    let (mut out, mut err) = std_streams()?;
    while let Some(c) = f.next().await? {
        match c.stream() {
            OutputStream::Stderr => {
                err.write_all(&c.data).await?;
                err.flush().await?;
            }
            _ => {
                out.write_all(&c.data).await?;
                out.flush().await?;
            }
        }
        if c.eof && c.dropped > 0 {
            eprintln!(
                "[hwsched: {} live batches of attempt {} were dropped; `hwsched logs {task_id} --attempt {}` has all of it]",
                c.dropped, c.attempt, c.attempt
            );
        }
    }
    Ok(exit::OK)
}

/// Prints the live output of some tasks, prefixed, while `submit --wait` follows them.
#[derive(Debug)]
pub struct LivePrinter {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl LivePrinter {
    /// Prints the lines of `ids` from `live` until [`LivePrinter::finish`].
    pub fn start(mut live: BoxStream<'static, LogChunk>, ids: impl IntoIterator<Item = String>) -> Self {
        let mut p = Prefixer::new(ids);
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    c = live.next() => match c {
                        Some(c) => print_lines(&p.lines(&c)),
                        None => return,
                    },
                    _ = &mut stopped => break,
                }
            }
            // what has arrived already is printed, nothing more is awaited
            while let Some(Some(c)) = live.next().now_or_never() {
                print_lines(&p.lines(&c));
            }
        });
        Self { stop, handle }
    }

    /// Prints what has arrived and stops.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}

fn print_lines(lines: &[(bool, String)]) {
    for (is_err, text) in lines {
        if *is_err {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

/// Longest partial line held back waiting for its newline.
const MAX_PARTIAL: usize = 64 * 1024;

/// Live output of a set of tasks as lines prefixed by their task id.
#[derive(Debug, Default)]
pub struct Prefixer {
    /// Tasks (and their shards and replicas) whose output is printed.
    ids: HashSet<String>,
    partial: HashMap<(String, u32, i32), Vec<u8>>,
}

impl Prefixer {
    /// For the tasks `ids`.
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        Self { ids: ids.into_iter().collect(), partial: HashMap::new() }
    }

    /// The complete lines of `c` (and, at its end, the rest) as (stderr?, text).
    pub fn lines(&mut self, c: &LogChunk) -> Vec<(bool, String)> {
        let own = hwsched_placement::group::parent_of(&c.task_id).unwrap_or(&c.task_id);
        if !self.ids.contains(own) {
            return vec![];
        }
        let key = (c.task_id.clone(), c.attempt, c.stream);
        let buf = self.partial.entry(key.clone()).or_default();
        buf.extend_from_slice(&c.data);
        let mut lines = Vec::new();
        let is_err = c.stream() == OutputStream::Stderr;
        let line = |b: &[u8]| (is_err, format!("[{}] {}", c.task_id, String::from_utf8_lossy(b)));
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            lines.push(line(&buf[..i]));
            buf.drain(..=i);
        }
        if buf.len() > MAX_PARTIAL || (c.eof && !buf.is_empty()) {
            lines.push(line(buf));
            buf.clear();
        }
        if c.eof {
            self.partial.remove(&key);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(task: &str, data: &str, eof: bool) -> LogChunk {
        LogChunk {
            task_id: task.into(),
            attempt: 1,
            stream: 1,
            data: data.as_bytes().to_vec(),
            eof,
            ..Default::default()
        }
    }

    #[test]
    fn lines_are_prefixed_and_joined_across_batches() {
        let mut p = Prefixer::new(["a".to_string()]);
        assert_eq!(p.lines(&chunk("a", "one\ntw", false)), vec![(false, "[a] one".to_string())]);
        assert_eq!(p.lines(&chunk("b", "other task\n", false)), vec![]);
        assert_eq!(p.lines(&chunk("a--s1", "shard\n", false)), vec![(false, "[a--s1] shard".to_string())]);
        assert_eq!(
            p.lines(&chunk("a", "o\nthree", true)),
            vec![(false, "[a] two".to_string()), (false, "[a] three".to_string())]
        );
    }
}
