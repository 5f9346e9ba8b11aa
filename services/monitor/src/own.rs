//! What the monitor and the tests it runs use of the host. The heartbeat
//! reports it beside the host's totals, so the scheduler can tell load from
//! others (the worker is overloaded) from load of the tests it placed there
//! (the worker is busy, which its slots already say).
//!
//! CPU is counted from the kernel's own counters rather than sampled: the
//! monitor's `/proc/self/stat` holds its own time and that of every child it
//! reaped (a test of 2 ms that no 250 ms sample sees is still there), and each
//! running test's root adds its time so far. The tests' process trees, sampled
//! by the usage tracker, cover descendants that are still running.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` times: the kernel's USER_HZ,
/// 100 on every architecture Linux exports to user space.
const USER_HZ: f64 = 100.0;

/// What the running attempts are, for one sample.
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    /// Root process id of each running attempt.
    pub roots: Vec<u32>,
    /// Sum of the attempts' sampled tree CPU, percent of one core.
    pub tree_cpu_pct: f64,
    /// Sum of the attempts' sampled tree memory, MB.
    pub tree_memory_mb: u64,
}

/// The monitor's and its tests' share of the host, percent.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct OwnShare {
    /// Share of all cores over the last interval.
    pub cpu_pct: f64,
    /// Share of the host's memory now.
    pub memory_pct: f64,
}

/// Keeps the previous tick count between samples (CPU shares are rates).
#[derive(Debug, Default)]
pub struct OwnLoad {
    last: Option<(u64, Instant)>,
}

impl OwnLoad {
    /// The share used since the previous call (0 CPU on the first) by this
    /// process, the children it reaped and the running `attempts`.
    pub fn sample(&mut self, attempts: &Attempts, cores: usize, total_memory_mb: f64) -> OwnShare {
        let ticks = read_ticks("self").unwrap_or(0)
            + attempts.roots.iter().filter_map(|pid| read_ticks(&pid.to_string())).sum::<u64>();
        let now = Instant::now();
        let counted = match self.last.replace((ticks, now)) {
            // a root reaped between the reads moves its time, never loses it: at most one short interval
            Some((before, at)) => share_pct(ticks.saturating_sub(before), now.duration_since(at).as_secs_f64(), cores),
            None => 0.0,
        };
        let sampled = attempts.tree_cpu_pct / cores.max(1) as f64;
        let rss_mb = own_rss_kb().unwrap_or(0) as f64 / 1024.0;
        let memory_pct = if total_memory_mb > 0.0 {
            100.0 * (rss_mb + attempts.tree_memory_mb as f64) / total_memory_mb
        } else {
            0.0
        };
        // both are lower bounds of what is ours: take the larger
        OwnShare { cpu_pct: counted.max(sampled).clamp(0.0, 100.0), memory_pct: memory_pct.clamp(0.0, 100.0) }
    }
}

/// `ticks` of CPU over `elapsed_s` seconds as a percent of `cores` cores.
pub fn share_pct(ticks: u64, elapsed_s: f64, cores: usize) -> f64 {
    if elapsed_s <= 0.0 {
        return 0.0;
    }
    100.0 * ticks as f64 / USER_HZ / (elapsed_s * cores.max(1) as f64)
}

fn read_ticks(pid: &str) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User and system ticks of a process and of the children it reaped, from
/// its `/proc/<pid>/stat` line.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    // the command name is in parentheses and may hold spaces and ')':
    // the fields that follow start after the last ')'
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // from `state` (field 3) on: utime, stime, cutime, cstime are fields 14-17
    fields.get(11..15)?.iter().map(|v| v.parse::<i64>().ok().map(|t| t.max(0) as u64)).sum()
}

/// This process's resident memory, kB.
fn own_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_are_read_past_an_awkward_command_name() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 20 5 20 0 1 0 123 4096 100";
        assert_eq!(stat_ticks(stat), Some(7 + 3 + 20 + 5));
        assert_eq!(stat_ticks("4242 (x) S 1 2"), None, "truncated");
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn ticks_become_a_share_of_all_cores() {
        // one core busy for a second on a 4-core host: 25 %
        assert!((share_pct(100, 1.0, 4) - 25.0).abs() < 1e-9);
        assert!((share_pct(50, 0.5, 1) - 100.0).abs() < 1e-9);
        assert_eq!(share_pct(10, 0.0, 4), 0.0);
    }

    #[test]
    fn a_reaped_child_counts_as_ours() {
        let mut own = OwnLoad::default();
        let idle = Attempts::default();
        own.sample(&idle, 1, 1024.0);
        // a child that burns CPU for a while and is reaped before the next sample
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let share = own.sample(&idle, 1, 1024.0);
        assert!(share.cpu_pct > 5.0, "the child's CPU time is the monitor's own: {share:?}");
        assert!(share.memory_pct > 0.0, "the monitor's own memory counts: {share:?}");
    }

    #[test]
    fn running_attempts_count_through_their_roots_and_trees() {
        let mut own = OwnLoad::default();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5"])
            .spawn()
            .expect("sh runs");
        let attempts = Attempts { roots: vec![child.id()], tree_cpu_pct: 0.0, tree_memory_mb: 512 };
        own.sample(&attempts, 1, 1024.0);
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut share = OwnShare::default();
        // until the loop is done: it burns while not reaped
        while share.cpu_pct < 5.0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            share = own.sample(&attempts, 1, 1024.0);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(share.cpu_pct > 5.0, "the live root's CPU is ours: {share:?}");
        assert!(share.memory_pct >= 50.0, "the sampled tree memory is ours: {share:?}");
        let sampled = Attempts { roots: vec![], tree_cpu_pct: 150.0, tree_memory_mb: 0 };
        let share = own.sample(&sampled, 2, 1024.0);
        assert!(share.cpu_pct >= 75.0, "1.5 sampled cores of 2 are ours: {share:?}");
    }
}
