//! Attempts in real cgroups (root on a host with v1 or v2 controllers). Where
//! cgroups are not usable each test says why and returns; with
//! `HWSCHED_REQUIRE_CGROUPS` set it fails instead.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hwsched_proto::v1::{Requirements, TaskStatus};
use tokio_util::sync::CancellationToken;

use super::{Attempt, CgroupConfig, Cgroups, Limits};
use crate::{
    output::capture::Capture,
    process::{self, Outcome, Spec},
};

/// The cgroups of one test, under a parent of its own (removed when dropped).
fn cgroups(test: &str, headroom: f64, pids_limit: u64) -> Option<Cgroups> {
    let parent = PathBuf::from(format!("hwsched-test-{}-{test}", std::process::id()));
    let cfg = CgroupConfig { parent: Some(parent), memory_headroom: headroom, pids_limit, ..Default::default() };
    match Cgroups::detect(&cfg, "test") {
        Ok(cgroups) => Some(cgroups),
        Err(e) if std::env::var_os("HWSCHED_REQUIRE_CGROUPS").is_some() => panic!("cgroups required: {e}"),
        Err(e) => {
            eprintln!("skipping {test}: cgroups not usable here: {e}");
            None
        }
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn spec<'a>(argv: &'a [String], timeout: Duration, cgroup: Attempt) -> Spec<'a> {
    Spec {
        argv,
        env: std::env::var("PATH").map(|p| vec![("PATH".to_string(), p)]).unwrap_or_default(),
        workdir: Some(Path::new("/tmp")),
        timeout,
        task_id: "t",
        gpus: &[],
        user: None,
        capture: Capture::new(1 << 20, &std::env::temp_dir(), None),
        cgroup: Some(cgroup),
    }
}

async fn run(spec: Spec<'_>) -> Outcome {
    process::run(spec, &Default::default(), &CancellationToken::new()).await.expect("outcome")
}

fn procs(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

#[tokio::test]
async fn memory_beyond_the_limit_is_oom_killed_and_counted() {
    let Some(t) = cgroups("oom", 1.0, 4096) else { return };
    let req = Requirements { memory_mb: 64, cpu_cores: 1.0, ..Default::default() };
    let cg = t.create("oom-task", 1, Some(&req)).expect("cgroup");
    let dirs = cg.dirs();
    let cmd = argv(&["python3", "-c", "b = bytearray(300 << 20); import time; time.sleep(1)"]);
    let o = run(spec(&cmd, Duration::from_secs(10), cg)).await;
    assert_eq!(o.status, TaskStatus::Failed, "{o:?}");
    let u = &o.usage;
    assert!(u.cgroup, "{u:?}");
    assert!(u.oom_kills >= 1, "not OOM-killed: {u:?} {}", o.stderr);
    assert_eq!(u.memory_limit_mb, 64);
    assert!((56..=72).contains(&u.memory_peak_mb), "peak {} MB, limit 64", u.memory_peak_mb);
    assert!(o.error.contains("OOM killer"), "{}", o.error);
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

#[tokio::test]
async fn nothing_outlives_the_attempt_not_even_a_new_session() {
    let Some(t) = cgroups("leftovers", 1.25, 4096) else { return };
    let cg = t.create_named("a", Limits::for_task(None, 1.25, 4096)).expect("cgroup");
    let dirs = cg.dirs();
    let marker = format!("{}.25", 300 + std::process::id() % 500);
    // setsid: out of the process group, so only the cgroup finds it
    let cmd = argv(&["sh", "-c", &format!("setsid sleep {marker} & sleep {marker}")]);
    let usage = Default::default();
    let started = process::start(spec(&cmd, Duration::from_secs(1), cg), &usage).expect("start");
    let deadline = Instant::now() + Duration::from_secs(3);
    while procs(&dirs[0]).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(procs(&dirs[0]).len() >= 3, "sh and both sleeps in the cgroup: {:?}", procs(&dirs[0]));
    let o = started.wait(&usage, std::future::pending()).await.expect("outcome");
    assert_eq!(o.status, TaskStatus::TimedOut, "{o:?}");
    let left = std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().expect("pgrep");
    assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

#[tokio::test]
async fn the_pids_limit_stops_a_fork_bomb() {
    let Some(t) = cgroups("pids", 1.25, 20) else { return };
    let cg = t.create("bomb", 1, None).expect("cgroup");
    let cmd = argv(&["sh", "-c", "for i in $(seq 100); do sleep 5 & done; wait"]);
    let started = Instant::now();
    let o = run(spec(&cmd, Duration::from_secs(4), cg)).await;
    assert_eq!(o.status, TaskStatus::Failed, "{o:?}");
    assert!(o.stderr.to_lowercase().contains("fork"), "{:?}", o.stderr);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn cpu_time_comes_from_the_cgroup() {
    let Some(t) = cgroups("cpu", 1.25, 4096) else { return };
    let cg = t.create("spin", 1, None).expect("cgroup");
    let cmd = argv(&["python3", "-c", "while True: pass"]);
    let o = run(spec(&cmd, Duration::from_secs(1), cg)).await;
    assert_eq!(o.status, TaskStatus::TimedOut, "{o:?}");
    assert!(o.usage.cgroup && o.usage.cpu_time_s > 0.5, "{:?}", o.usage);
    assert!(o.usage.cpu_time_s < 4.0, "{:?}", o.usage);
    assert_eq!((o.usage.memory_limit_mb, o.usage.oom_kills), (0, 0), "no memory requirement, no limit");
}

#[tokio::test]
async fn another_user_joins_too_and_reads_nothing_from_stdin() {
    let Some(t) = cgroups("user", 1.25, 4096) else { return };
    let cg = t.create("nobody", 1, None).expect("cgroup");
    let cmd = argv(&["sh", "-c", "id -u; cat /proc/self/cgroup; readlink /proc/self/fd/0"]);
    let mut s = spec(&cmd, Duration::from_secs(5), cg);
    s.user = Some((65534, 65534));
    let o = run(s).await;
    assert_eq!(o.status, TaskStatus::Succeeded, "{o:?}");
    assert!(o.stdout.starts_with("65534\n"), "{}", o.stdout);
    assert!(o.stdout.contains("/nobody-1"), "not in its cgroup: {}", o.stdout);
    assert!(o.stdout.trim_end().ends_with("/dev/null"), "{}", o.stdout);
}

#[tokio::test]
async fn a_failed_join_never_runs_the_program() {
    let Some(t) = cgroups("join", 1.25, 4096) else { return };
    let cg = t.create_named("gone", Limits::default()).expect("cgroup");
    for d in cg.dirs() {
        std::fs::remove_dir(&d).expect("rmdir");
    }
    let marker = std::env::temp_dir().join(format!("hwsched-join-{}", std::process::id()));
    let cmd = argv(&["touch", &marker.to_string_lossy()]);
    let err = process::start(spec(&cmd, Duration::from_secs(5), cg), &Default::default()).expect_err("no cgroup");
    assert!(err.contains("cgroup"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the program ran outside its cgroup");
}

#[test]
fn a_cgroup_left_by_a_crashed_monitor_is_emptied_and_replaced() {
    let Some(t) = cgroups("crash", 1.25, 4096) else { return };
    let first = t.create_named("same", Limits::default()).expect("cgroup");
    let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
    first.join(sleeper.id()).expect("join");
    std::mem::forget(first); // as if the monitor died: nothing cleaned up
    let second = t.create_named("same", Limits::default()).expect("made again");
    let exited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        sleeper.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the leftover's process was not killed");
    assert!(procs(&second.dirs()[0]).is_empty());
    let dirs = second.dirs();
    drop(second);
    assert!(dirs.iter().all(|d| !d.exists()), "cgroup left: {dirs:?}");
}

#[test]
fn the_next_start_sweeps_what_a_gone_monitor_left_and_spares_a_live_ones() {
    let Some(live) = cgroups("sweep", 1.25, 4096) else { return };
    let bases: Vec<PathBuf> = live.parent_dirs().iter().filter_map(|d| d.parent().map(Path::to_path_buf)).collect();
    // a monitor that crashed: its pid is gone, its attempt's process still runs
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    let stale: Vec<PathBuf> = bases.iter().map(|b| b.join(format!("m{gone_pid}-0"))).collect();
    let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
    for d in &stale {
        std::fs::create_dir_all(d.join("left")).expect("mkdir");
        std::fs::write(d.join("left/cgroup.procs"), sleeper.id().to_string()).expect("join");
    }
    let running = live.create_named("running", Limits::default()).expect("cgroup");
    let again = cgroups("sweep", 1.25, 4096).expect("usable a moment ago");
    let exited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        sleeper.try_wait().ok().flatten().is_some()
    });
    assert!(exited, "the gone monitor's attempt was not killed at start");
    assert!(stale.iter().all(|d| !d.exists()), "stale cgroups left: {stale:?}");
    assert!(running.dirs().iter().all(|d| d.exists()), "a live monitor's attempt was swept");
    assert_ne!(again.parent_dirs(), live.parent_dirs(), "each monitor has its own parent");
    drop((running, live, again));
    assert!(bases.iter().all(|d| !d.exists()), "parents left: {bases:?}");
}

#[tokio::test]
async fn a_missing_program_is_a_start_error_as_without_a_cgroup() {
    let Some(t) = cgroups("missing", 1.25, 4096) else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "x").expect("write");
    for cmd in ["/nonexistent/binary", "no-such-program-here", &not_executable.to_string_lossy()] {
        let cg = t.create_named("m", Limits::default()).expect("cgroup");
        let argv = argv(&[cmd]);
        let err = process::start(spec(&argv, Duration::from_secs(5), cg), &Default::default()).expect_err(cmd);
        assert!(err.contains("cannot start") && err.contains(cmd), "{err}");
    }
}
