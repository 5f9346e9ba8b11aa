//! Running one command: its own process group, its output captured
//! ([`crate::output::capture`]: tails, spool, live batches), the
//! timeout (SIGTERM then SIGKILL to the whole group), and nothing it started
//! outliving it, even when the future running it is dropped. With a cgroup
//! ([`crate::cgroup`]) the command joins it before its program runs, and
//! whatever is left in it when the attempt ends is killed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use hwsched_proto::v1::{ResourceUsage, TaskStatus};
use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::{
    cgroup,
    output::capture::{Capture, Captured, Streams},
    usage::TaskUsage,
};

/// Bytes of stdout/stderr kept per task for the result's tails.
pub const OUTPUT_TAIL_BYTES: usize = crate::output::capture::TAIL_BYTES;
/// How long the output pipes may stay open after the command's process group ended.
const PIPE_GRACE: Duration = Duration::from_secs(2);
/// Starts a command held until the monitor has moved it into its cgroup: `sh`
/// waits for a line on stdin, then execs the program (same pid, same process
/// group) with stdin from /dev/null. No line (the monitor gave up or died): it
/// exits without running the program.
const CGROUP_SHIM: &str = r#"read -r _ || exit 125; exec "$@" </dev/null"#;
/// Time between SIGTERM and SIGKILL when a task is stopped.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug)]
pub struct Spec<'a> {
    /// argv; not empty.
    pub argv: &'a [String],
    /// The whole environment (nothing else of the monitor's is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory, if any.
    pub workdir: Option<&'a Path>,
    /// Killed after this long.
    pub timeout: Duration,
    /// Task id, for its usage accumulator.
    pub task_id: &'a str,
    /// GPUs reserved for it.
    pub gpus: &'a [u32],
    /// Run as this (uid, gid) instead of the monitor's user.
    pub user: Option<(u32, u32)>,
    /// Where its output goes.
    pub capture: Capture,
    /// The attempt's cgroup, when it runs in one: joined before the program runs,
    /// emptied and removed when the attempt ends.
    pub cgroup: Option<cgroup::Attempt>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Succeeded, failed, timed out or error.
    pub status: TaskStatus,
    /// Exit code, -1 when there is none.
    pub exit_code: i32,
    /// Why, when not a plain exit.
    pub error: String,
    /// Last bytes of stdout.
    pub stdout: String,
    /// Last bytes of stderr.
    pub stderr: String,
    /// Measured resource usage of the process tree.
    pub usage: ResourceUsage,
    /// The whole output, spooled, to be stored ([`crate::output::Outputs::bring_back`]).
    pub output: Streams,
}

impl Outcome {
    /// An attempt that ended in an error before or instead of running.
    pub fn error(msg: String) -> Self {
        Outcome {
            status: TaskStatus::Error,
            exit_code: -1,
            error: msg,
            stdout: String::new(),
            stderr: String::new(),
            usage: ResourceUsage::default(),
            output: Streams::default(),
        }
    }
}

/// Kills the whole process group when dropped (normal end, timeout, or an aborted future).
#[derive(Debug)]
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}

/// A started command.
#[derive(Debug)]
pub struct Started {
    child: tokio::process::Child,
    pid: u32,
    guard: GroupGuard,
    out: tokio::task::JoinHandle<Captured>,
    err: tokio::task::JoinHandle<Captured>,
    /// Ends the output readers when something outside the group holds a pipe open.
    close_pipes: CancellationToken,
    publisher: Option<crate::output::live::Publisher>,
    workdir: Option<PathBuf>,
    timeout: Duration,
    cgroup: Option<cgroup::Attempt>,
}

/// How a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// The monitor is stopping: kill, report nothing (the assignment is redelivered).
    Stop,
    /// The task was cancelled: kill and report it cancelled.
    Cancel,
}

/// Starts `spec` in its own process group and registers its root pid in `usage`
/// so the tracker samples its tree.
/// Fails with the reason when the command cannot be started.
pub fn start(spec: Spec<'_>, usage: &Arc<Mutex<HashMap<u32, TaskUsage>>>) -> Result<Started, String> {
    // run as another user, the child searches PATH with that user's rights (std forks then anyway)
    let program = match spec.user {
        Some(_) => PathBuf::from(&spec.argv[0]),
        None => program(&spec.argv[0], &spec.env, spec.workdir),
    };
    let mut cmd = match spec.cgroup {
        Some(_) => {
            startable(&program, &spec.argv[0], spec.workdir, spec.user.is_some())?;
            let mut shim = Command::new("/bin/sh");
            shim.args(["-c", CGROUP_SHIM, "hwsched-shim"]).arg(program);
            shim
        }
        None => Command::new(program),
    };
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.cgroup.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = spec.workdir {
        cmd.current_dir(d);
    }
    if let Some((uid, gid)) = spec.user {
        // std drops the supplementary groups too when switching from root
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {:?}: {e}", spec.argv[0]))?;
    let pid = child.id().unwrap_or(0);
    if let Some(cg) = &spec.cgroup {
        if let Err(why) = join(cg, &mut child, pid) {
            // kill_on_drop ends the held shim; it never ran the program
            signal_group(pid, Signal::SIGKILL);
            return Err(format!("cannot move {:?} into its cgroup: {why}", spec.argv[0]));
        }
    }
    usage.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, TaskUsage::new(spec.task_id, spec.gpus));
    let (out_sink, err_sink, publisher) = spec.capture.split();
    let close_pipes = CancellationToken::new();
    let out = tokio::spawn(out_sink.run(child.stdout.take(), close_pipes.clone()));
    let err = tokio::spawn(err_sink.run(child.stderr.take(), close_pipes.clone()));
    let workdir = spec.workdir.map(Path::to_path_buf);
    let (guard, timeout, cgroup) = (GroupGuard(pid), spec.timeout, spec.cgroup);
    Ok(Started { child, pid, guard, out, err, close_pipes, publisher, workdir, timeout, cgroup })
}

/// Moves the held child into `cg` (the monitor writes `cgroup.procs`, so this works
/// for a child running as another user too), then releases it to exec its program.
fn join(cg: &cgroup::Attempt, child: &mut tokio::process::Child, pid: u32) -> Result<(), String> {
    use std::io::Write;
    if pid == 0 {
        return Err("the child has no pid".into());
    }
    cg.join(pid).map_err(|e| e.to_string())?;
    let stdin = child.stdin.take().ok_or("no stdin to release the child with")?;
    let fd = stdin.into_owned_fd().map_err(|e| format!("release: {e}"))?;
    // one byte into an empty pipe: never blocks; closed right after
    std::fs::File::from(fd).write_all(b"\n").map_err(|e| format!("release: {e}"))
}

/// Refuses what spawning the program itself would refuse: through the cgroup
/// shim `sh` always starts, and a missing program would end as exit code 127, a
/// test failure, instead of an error. A bare name run as another user is left
/// to the shim (its PATH is searched with that user's rights).
fn startable(program: &Path, argv0: &str, workdir: Option<&Path>, other_user: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !argv0.contains('/') {
        if other_user {
            return Ok(());
        }
        if program == Path::new(argv0) {
            return Err(format!("cannot start {argv0:?}: not found in the task's PATH"));
        }
    }
    let path = match workdir {
        Some(w) if program.is_relative() => w.join(program),
        _ => program.to_path_buf(),
    };
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("cannot start {argv0:?}: not an executable file")),
        Err(e) => Err(format!("cannot start {argv0:?}: {e}")),
    }
}

/// The program to start for `argv0`: itself when it names a path, else the
/// first executable file of that name in the task's own `PATH` (relative
/// entries from its working directory), as `execvp` in the child would find
/// it; unchanged when none is found (starting it then fails and says so).
/// Resolved here because the standard library starts a command whose
/// environment sets `PATH` by fork and exec (a copy of the monitor's page
/// tables per test) but one given a path by `posix_spawn`, several times
/// cheaper per short test. A script without a `#!` line is not run through
/// `/bin/sh` as `execvp` would: it fails with "exec format error".
fn program(argv0: &str, env: &[(String, String)], workdir: Option<&Path>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if argv0.contains('/') {
        return PathBuf::from(argv0);
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map_or("", |(_, v)| v.as_str());
    let executable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    path.split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| match workdir {
            Some(w) if Path::new(dir).is_relative() => w.join(dir).join(argv0),
            _ => Path::new(dir).join(argv0),
        })
        .find(|p| executable(p))
        .unwrap_or_else(|| PathBuf::from(argv0))
}

impl Started {
    /// Process (and group) id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the end; `None` when `interrupt` said [`Interrupt::Stop`].
    pub async fn wait(
        mut self,
        usage: &Arc<Mutex<HashMap<u32, TaskUsage>>>,
        interrupt: impl std::future::Future<Output = Interrupt>,
    ) -> Option<Outcome> {
        let pid = self.pid;
        let lock = || usage.lock().unwrap_or_else(|p| p.into_inner());
        let status = tokio::select! {
            s = tokio::time::timeout(self.timeout, self.child.wait()) => Ok(s),
            why = interrupt => Err(why),
        };
        if !matches!(status, Ok(Ok(_))) {
            stop_group(pid, &mut self.child).await;
        }
        // Nothing a task started may outlive it (background children keep pipes open).
        signal_group(pid, Signal::SIGKILL);
        drop(self.guard);
        let mut measured = lock().remove(&pid).unwrap_or_default().usage();
        // what setsid/double-forked children left in the cgroup dies with it
        let counted = match self.cgroup.take() {
            Some(cg) => tokio::task::spawn_blocking(move || cg.finish()).await.ok(),
            None => None,
        };
        let (status, exit_code, error) = match status {
            Err(Interrupt::Stop) => return None,
            Err(Interrupt::Cancel) => (TaskStatus::Cancelled, -1, "cancelled".to_string()),
            Ok(Ok(Ok(s))) => match s.code() {
                Some(0) => (TaskStatus::Succeeded, 0, String::new()),
                Some(c) => (TaskStatus::Failed, c, String::new()),
                None => (TaskStatus::Failed, -1, format!("terminated by {s}")),
            },
            Ok(Ok(Err(e))) => (TaskStatus::Error, -1, format!("wait failed: {e}")),
            Ok(Err(_)) => (TaskStatus::TimedOut, -1, format!("timed out after {}s", self.timeout.as_secs())),
        };
        let error = match counted {
            Some(c) => {
                c.apply(&mut measured);
                oom_note(error, status, &c)
            }
            None => error,
        };
        let closer = self.close_pipes.clone();
        let close_later = tokio::spawn(async move {
            tokio::time::sleep(PIPE_GRACE).await;
            closer.cancel();
        });
        let out = collect(self.out).await;
        let err = collect(self.err).await;
        close_later.abort();
        let (stdout, stderr) = (out.tail_text(), err.tail_text());
        let output = Streams { stdout: out, stderr: err, publisher: self.publisher, workdir: self.workdir };
        Some(Outcome { status, exit_code, error, stdout, stderr, usage: measured, output })
    }
}

/// Starts and waits: `None` when `stop` fired first.
pub async fn run(
    spec: Spec<'_>,
    usage: &Arc<Mutex<HashMap<u32, TaskUsage>>>,
    stop: &CancellationToken,
) -> Option<Outcome> {
    match start(spec, usage) {
        Ok(started) => {
            started
                .wait(usage, async {
                    stop.cancelled().await;
                    Interrupt::Stop
                })
                .await
        }
        Err(why) => Some(Outcome::error(why)),
    }
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills a process group left behind by an earlier monitor, if its leader is
/// still the same process (same start time). Returns whether it was found.
pub fn kill_orphan(pgid: u32, ticks: u64) -> bool {
    if pgid > 1 && start_ticks(pgid) == Some(ticks) {
        signal_group(pgid, Signal::SIGKILL);
        return true;
    }
    false
}

/// `error`, saying so when the OOM killer killed processes of an attempt that did not succeed.
fn oom_note(error: String, status: TaskStatus, c: &cgroup::Counters) -> String {
    if c.oom_kills == 0 || status == TaskStatus::Succeeded {
        return error;
    }
    let note =
        format!("{} process(es) killed by the OOM killer at the memory limit of {} MB", c.oom_kills, c.memory_limit_mb);
    if error.is_empty() {
        note
    } else {
        format!("{error}; {note}")
    }
}

/// What a reader captured (it ends at most [`PIPE_GRACE`] after the process group did).
async fn collect(h: tokio::task::JoinHandle<Captured>) -> Captured {
    h.await.unwrap_or_else(|e| Captured { error: Some(format!("output reader failed: {e}")), ..Default::default() })
}

/// SIGTERM to the task's process group; SIGKILL to whatever is left once the
/// leader exited or the grace period ran out; then reap the leader.
async fn stop_group(pid: u32, child: &mut tokio::process::Child) {
    signal_group(pid, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    signal_group(pid, Signal::SIGKILL);
    let _ = child.wait().await;
}

fn signal_group(pid: u32, signal: Signal) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_program_is_found_in_the_tasks_own_path() {
        let bin = tempfile::tempdir().expect("dir");
        let tool = bin.path().join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let env =
            |path: &str| vec![("PATH".to_string(), "/ignored".to_string()), ("PATH".to_string(), path.to_string())];
        let dir = bin.path().to_string_lossy().into_owned();
        // not executable yet: skipped, so not found
        assert_eq!(program("tool", &env(&format!("/nowhere:{dir}")), None), PathBuf::from("tool"));
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        assert_eq!(program("tool", &env(&format!("/nowhere:{dir}")), None), tool, "the last PATH set wins");
        // a relative entry counts from the task's working directory
        assert_eq!(program("tool", &env("."), Some(bin.path())), bin.path().join(".").join("tool"));
        assert_eq!(program("./tool", &env(&dir), None), PathBuf::from("./tool"), "a path is taken as it is");
        assert_eq!(program("tool", &[], None), PathBuf::from("tool"), "no PATH: left to the start to fail");
    }

    fn spec<'a>(argv: &'a [String], timeout_s: u64) -> Spec<'a> {
        Spec {
            argv,
            env: std::env::var("PATH").map(|p| vec![("PATH".to_string(), p)]).unwrap_or_default(),
            workdir: None,
            timeout: Duration::from_secs(timeout_s),
            task_id: "t",
            gpus: &[],
            user: None,
            capture: Capture::new(1 << 20, &std::env::temp_dir(), None),
            cgroup: None,
        }
    }

    #[tokio::test]
    async fn output_tail_is_bounded_and_keeps_the_end() {
        let argv: Vec<String> =
            ["sh", "-c", "yes a | head -c 100000 | tr -d '\\n'; echo END"].iter().map(|s| s.to_string()).collect();
        let o = run(spec(&argv, 10), &Default::default(), &CancellationToken::new()).await.expect("ran");
        assert_eq!(o.status, TaskStatus::Succeeded);
        assert_eq!(o.stdout.len(), OUTPUT_TAIL_BYTES);
        assert!(o.stdout.ends_with("aEND\n"), "{:?}", &o.stdout[o.stdout.len() - 10..]);
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_group() {
        let marker = format!("{}.75", 300 + std::process::id() % 500);
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), format!("sleep {marker} & sleep {marker}")];
        let usage = Default::default();
        let stop = CancellationToken::new();
        let fut = run(spec(&argv, 60), &usage, &stop);
        // give it time to start, then drop the future (as when a monitor task is aborted)
        let _ = tokio::time::timeout(Duration::from_millis(300), fut).await;
        let left =
            std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().expect("pgrep");
        assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    }

    #[test]
    fn start_ticks_identify_a_process() {
        let me = std::process::id();
        let t = start_ticks(me).expect("own stat");
        assert_eq!(start_ticks(me), Some(t));
        assert!(!kill_orphan(me, t + 1), "a different start time is another process");
    }

    #[tokio::test]
    async fn cancel_kills_and_reports_cancelled() {
        let argv: Vec<String> = vec!["sleep".into(), "30".into()];
        let usage = Default::default();
        let started = start(spec(&argv, 60), &usage).expect("start");
        let o = started
            .wait(&usage, async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Interrupt::Cancel
            })
            .await
            .expect("outcome");
        assert_eq!(o.status, TaskStatus::Cancelled);
    }

    #[tokio::test]
    async fn stop_kills_and_reports_nothing() {
        let argv: Vec<String> = vec!["sleep".into(), "30".into()];
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            s2.cancel();
        });
        let started = std::time::Instant::now();
        assert!(run(spec(&argv, 60), &Default::default(), &stop).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
