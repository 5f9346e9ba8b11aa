//! GPU faults seen on this worker, per NVML device index, so that an attempt
//! that did not succeed while one of its GPUs faulted ends GPU_FAULT. Pure
//! bookkeeping with the time passed in: [`crate::gpu`] feeds it from NVML at
//! the telemetry cadence; [`crate::executor`] reads it when an attempt ends.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

/// Faults kept per GPU; older ones are forgotten. A GPU with more is broken
/// anyway, and the newest are those that running attempts overlap.
pub const KEEP_PER_GPU: usize = 64;

/// XIDs the application causes (illegal address, engine exception, its own
/// cleanup): the GPU is still healthy. The skip list of NVIDIA's
/// k8s-device-plugin health check.
pub const APPLICATION_XIDS: [u64; 5] = [13, 31, 43, 45, 68];

/// How many faults an attempt's error text names; the rest are counted.
const NAMED_IN_ERROR: usize = 4;

/// One GPU fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A critical XID event; `None` when NVML could not say which XID.
    Xid(Option<u64>),
    /// A double-bit (uncorrected) ECC error event.
    DoubleBitEcc,
    /// The volatile uncorrected ECC error count rose.
    EccUncorrected {
        /// The count before.
        from: u64,
        /// The count now.
        to: u64,
    },
    /// Pages became pending retirement (a reboot retires them).
    PagesPendingRetirement,
    /// NVML lost the GPU: fallen off the bus, or its handle vanished (the NVML error).
    Lost(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Xid(Some(x)) => write!(f, "XID {x}"),
            Fault::Xid(None) => write!(f, "XID (unknown)"),
            Fault::DoubleBitEcc => write!(f, "double-bit ECC error"),
            Fault::EccUncorrected { from, to } => write!(f, "uncorrected ECC errors {from} -> {to}"),
            Fault::PagesPendingRetirement => write!(f, "pages pending retirement"),
            Fault::Lost(why) => write!(f, "GPU lost ({why})"),
        }
    }
}

/// A fault as seen by a sweep: it happened after `since_ms` (the sweep before) and by `at_ms`.
#[derive(Debug, Clone)]
struct Event {
    since_ms: i64,
    at_ms: i64,
    fault: Fault,
}

#[derive(Debug, Default)]
struct Gpu {
    events: VecDeque<Event>,
    /// Last uncorrected ECC count read (the first one is the baseline).
    ecc: Option<u64>,
    /// Last pending-retirement flag read.
    pending: Option<bool>,
    /// Lost, and not readable since: counts for every attempt that ends after it.
    lost: Option<Event>,
}

/// Recent GPU faults by NVML index, and when the last sweep of the GPUs ended.
#[derive(Debug, Default)]
pub struct FaultLedger {
    gpus: BTreeMap<u32, Gpu>,
    last_sweep_ms: Option<i64>,
    period_ms: Option<i64>,
}

impl FaultLedger {
    /// Records `fault` of GPU `index`, seen at `at_ms`. False when it is no GPU fault
    /// (an application XID) or a GPU already lost is reported lost again.
    pub fn record(&mut self, index: u32, at_ms: i64, fault: Fault) -> bool {
        if matches!(fault, Fault::Xid(Some(x)) if APPLICATION_XIDS.contains(&x)) {
            return false;
        }
        let since_ms = self.last_sweep_ms.map_or(at_ms, |s| s.min(at_ms));
        let gpu = self.gpus.entry(index).or_default();
        let event = Event { since_ms, at_ms, fault };
        if matches!(event.fault, Fault::Lost(_)) {
            if gpu.lost.is_some() {
                return false;
            }
            gpu.lost = Some(event.clone());
        }
        if gpu.events.len() >= KEEP_PER_GPU {
            gpu.events.pop_front();
        }
        gpu.events.push_back(event);
        true
    }

    /// The volatile uncorrected ECC count of GPU `index`: the first reading is the
    /// baseline, a rise a fault (recorded, and returned), a drop (driver reloaded) a new baseline.
    pub fn observe_ecc(&mut self, index: u32, at_ms: i64, count: u64) -> Option<Fault> {
        let from = self.gpus.entry(index).or_default().ecc.replace(count).filter(|&from| count > from)?;
        self.recorded(index, at_ms, Fault::EccUncorrected { from, to: count })
    }

    /// Whether GPU `index` has pages pending retirement: becoming so is a fault (recorded, and returned).
    pub fn observe_retirement(&mut self, index: u32, at_ms: i64, pending: bool) -> Option<Fault> {
        let before = self.gpus.entry(index).or_default().pending.replace(pending);
        if before != Some(false) || !pending {
            return None;
        }
        self.recorded(index, at_ms, Fault::PagesPendingRetirement)
    }

    fn recorded(&mut self, index: u32, at_ms: i64, fault: Fault) -> Option<Fault> {
        self.record(index, at_ms, fault.clone()).then_some(fault)
    }

    /// GPU `index` read fine: it is not lost (any more).
    pub fn readable(&mut self, index: u32) {
        if let Some(g) = self.gpus.get_mut(&index) {
            g.lost = None;
        }
    }

    /// A sweep of every GPU ended at `at_ms`: what it saw is in.
    pub fn swept(&mut self, at_ms: i64) {
        if let Some(last) = self.last_sweep_ms {
            self.period_ms = Some(at_ms - last);
        }
        self.last_sweep_ms = Some(at_ms);
    }

    /// Faults of the GPUs `indices` that may have happened in `from_ms..=to_ms`,
    /// oldest first, with their GPU; a GPU still lost counts however long ago it was lost.
    pub fn faults_during(&self, indices: &[u32], from_ms: i64, to_ms: i64) -> Vec<(u32, String)> {
        let mut found: Vec<(i64, u32, String)> = Vec::new();
        for (&index, gpu) in self.gpus.iter().filter(|(i, _)| indices.contains(i)) {
            let overlaps = |e: &&Event| e.since_ms <= to_ms && e.at_ms >= from_ms;
            found.extend(gpu.events.iter().filter(overlaps).map(|e| (e.at_ms, index, e.fault.to_string())));
            if let Some(l) = gpu.lost.as_ref().filter(|l| l.at_ms < from_ms) {
                found.push((l.at_ms, index, l.fault.to_string()));
            }
        }
        found.sort();
        found.into_iter().map(|(_, index, text)| (index, text)).collect()
    }

    /// Whether a sweep ended at or after `to_ms` (or there are no sweeps: no NVML).
    pub fn settled(&self, to_ms: i64) -> bool {
        self.last_sweep_ms.is_none_or(|s| s >= to_ms)
    }

    /// How long to wait at most for the next sweep: a period and a second (30 s at most).
    pub fn settle_within(&self) -> Duration {
        let ms = self.period_ms.unwrap_or(1000).clamp(0, 29_000) + 1000;
        Duration::from_millis(ms.unsigned_abs())
    }
}

/// Appends what `faults` says to an attempt's `error` text, keeping what is there.
pub fn append_to(error: &mut String, faults: &[(u32, String)]) {
    if faults.is_empty() {
        return;
    }
    let mut text: Vec<String> = faults.iter().take(NAMED_IN_ERROR).map(|(i, f)| format!("gpu{i} {f}")).collect();
    if faults.len() > NAMED_IN_ERROR {
        text.push(format!("{} more", faults.len() - NAMED_IN_ERROR));
    }
    if !error.is_empty() {
        error.push_str("; ");
    }
    error.push_str("GPU fault during the attempt: ");
    error.push_str(&text.join(", "));
}

/// The ledger as the GPU sampler (which records, then says a sweep ended) and
/// the executor (which reads, after waiting for the sweep after an attempt's end) share it.
#[derive(Debug, Default)]
pub struct GpuFaults {
    ledger: Mutex<FaultLedger>,
    swept: tokio::sync::Notify,
}

impl GpuFaults {
    /// The ledger.
    pub fn lock(&self) -> MutexGuard<'_, FaultLedger> {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A sweep ended at `at_ms`: wakes who waits for it.
    pub fn swept(&self, at_ms: i64) {
        self.lock().swept(at_ms);
        self.swept.notify_waiters();
    }

    /// Waits until a sweep ended at or after `to_ms`, for at most [`FaultLedger::settle_within`]:
    /// a fault that ended an attempt may be seen only by the sweep after its end.
    pub async fn settle(&self, to_ms: i64) {
        let within = {
            let ledger = self.lock();
            if ledger.settled(to_ms) {
                return;
            }
            ledger.settle_within()
        };
        let _ = tokio::time::timeout(within, async {
            loop {
                let notified = self.swept.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let done = self.lock().settled(to_ms);
                if done {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::{append_to, Fault, FaultLedger, GpuFaults, KEEP_PER_GPU};

    #[test]
    fn first_ecc_reading_is_a_baseline_and_a_rise_a_fault() {
        let mut l = FaultLedger::default();
        assert_eq!(l.observe_ecc(0, 1_000, 7), None, "baseline");
        assert_eq!(l.observe_ecc(0, 2_000, 7), None);
        assert!(l.faults_during(&[0], 0, 10_000).is_empty());
        assert_eq!(l.observe_ecc(0, 3_000, 9), Some(Fault::EccUncorrected { from: 7, to: 9 }));
        assert_eq!(l.faults_during(&[0], 0, 10_000), vec![(0, "uncorrected ECC errors 7 -> 9".into())]);
        assert_eq!(l.observe_ecc(0, 4_000, 0), None, "a reset counter is a new baseline");
        assert_eq!(l.observe_retirement(1, 1_000, true), None, "pending at start: a baseline too");
        assert_eq!(l.observe_retirement(2, 1_000, false), None);
        assert_eq!(l.observe_retirement(2, 2_000, true), Some(Fault::PagesPendingRetirement));
        assert_eq!(l.observe_retirement(2, 3_000, true), None, "still pending: no new fault");
    }

    #[test]
    fn faults_outside_the_window_do_not_count() {
        let mut l = FaultLedger::default();
        for at in [1_000, 2_000, 3_000, 4_000] {
            l.swept(at);
        }
        l.record(0, 5_000, Fault::Xid(Some(79))); // happened in 4_000..=5_000
        l.swept(5_000);
        assert!(l.faults_during(&[0], 1_000, 3_999).is_empty(), "ended before it");
        assert!(l.faults_during(&[0], 5_001, 9_000).is_empty(), "started after it");
        assert_eq!(l.faults_during(&[0], 4_500, 4_600), vec![(0, "XID 79".into())], "seen a sweep later");
        assert_eq!(l.faults_during(&[0], 5_000, 9_000).len(), 1);
    }

    #[test]
    fn only_the_attempts_gpus_count_and_application_xids_never() {
        let mut l = FaultLedger::default();
        assert!(l.record(1, 1_000, Fault::DoubleBitEcc));
        assert!(!l.record(0, 1_000, Fault::Xid(Some(13))), "the test's own illegal access");
        assert!(l.faults_during(&[0, 2], 0, 5_000).is_empty());
        assert_eq!(l.faults_during(&[0, 1], 0, 5_000), vec![(1, "double-bit ECC error".into())]);
        assert!(l.faults_during(&[], 0, 5_000).is_empty());
    }

    #[test]
    fn a_lost_gpu_counts_until_it_reads_again() {
        let mut l = FaultLedger::default();
        assert!(l.record(2, 1_000, Fault::Lost("GPU is lost".into())));
        assert!(!l.record(2, 2_000, Fault::Lost("GPU is lost".into())), "reported once");
        assert_eq!(l.faults_during(&[2], 50_000, 60_000), vec![(2, "GPU lost (GPU is lost)".into())]);
        assert!(l.faults_during(&[2], 0, 500).is_empty(), "not before it");
        l.readable(2);
        assert!(l.faults_during(&[2], 50_000, 60_000).is_empty());
        assert_eq!(l.faults_during(&[2], 0, 60_000).len(), 1, "still in the history");
    }

    #[test]
    fn memory_is_bounded_per_gpu() {
        let mut l = FaultLedger::default();
        for n in 0..(KEEP_PER_GPU as u64 + 36) {
            l.record(0, n as i64, Fault::Xid(Some(1000 + n)));
        }
        let kept = l.faults_during(&[0], 0, i64::MAX);
        assert_eq!(kept.len(), KEEP_PER_GPU);
        assert_eq!(kept[0].1, "XID 1036", "the oldest are forgotten");
    }

    #[test]
    fn fault_text_is_appended_to_the_error() {
        let mut e = "exit 1".to_string();
        append_to(&mut e, &[(0, "XID 79".into())]);
        assert_eq!(e, "exit 1; GPU fault during the attempt: gpu0 XID 79");
        let mut e = String::new();
        let many: Vec<(u32, String)> = (0..6).map(|i| (i, "XID 48".to_string())).collect();
        append_to(&mut e, &many);
        assert!(e.starts_with("GPU fault during the attempt: gpu0 XID 48") && e.ends_with(", 2 more"), "{e}");
        let mut e = "kept".to_string();
        append_to(&mut e, &[]);
        assert_eq!(e, "kept");
    }

    #[tokio::test]
    async fn settling_waits_for_the_sweep_after_the_end() {
        let f = GpuFaults::default();
        f.settle(1_000).await; // never swept: no NVML, nothing to wait for
        f.swept(500);
        assert!(!f.lock().settled(1_000));
        tokio::join!(f.settle(1_000), async {
            tokio::task::yield_now().await;
            f.lock().record(0, 1_200, Fault::Xid(Some(79)));
            f.swept(1_200);
        });
        assert!(f.lock().settled(1_000));
        assert_eq!(f.lock().faults_during(&[0], 0, 1_000).len(), 1, "seen by the sweep after the end");
    }
}
