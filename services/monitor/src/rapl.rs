//! CPU package energy from RAPL (`/sys/class/powercap/intel-rapl:N/energy_uj`,
//! also exposed for AMD). Absent on machines and VMs without it: then tasks
//! report no CPU energy rather than zero.

use std::path::{Path, PathBuf};

/// Default sysfs root of the powercap framework.
pub const POWERCAP_ROOT: &str = "/sys/class/powercap";

#[derive(Debug)]
struct Domain {
    energy: PathBuf,
    max_range_uj: u64,
    last_uj: Option<u64>,
}

/// The package domains of this host.
#[derive(Debug)]
pub struct Rapl {
    domains: Vec<Domain>,
}

impl Rapl {
    /// Finds readable package domains under `root`; `None` when there are none.
    pub fn discover(root: &Path) -> Option<Self> {
        let mut domains = Vec::new();
        for entry in std::fs::read_dir(root).ok()?.filter_map(Result::ok) {
            let dir = entry.path();
            let name = std::fs::read_to_string(dir.join("name")).unwrap_or_default();
            if !name.trim().starts_with("package") {
                continue;
            }
            let energy = dir.join("energy_uj");
            if read_u64(&energy).is_none() {
                continue; // not readable (permissions): leave it out
            }
            let max_range_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            domains.push(Domain { energy, max_range_uj, last_uj: None });
        }
        (!domains.is_empty()).then_some(Self { domains })
    }

    /// Joules used by all packages since the previous call (`None` on the first call).
    pub fn delta_j(&mut self) -> Option<f64> {
        let mut total_uj: Option<u64> = None;
        for d in &mut self.domains {
            let now = read_u64(&d.energy)?;
            if let Some(last) = d.last_uj.replace(now) {
                // the counter wraps at max_energy_range_uj
                let delta = if now >= last { now - last } else { d.max_range_uj - last + now };
                total_uj = Some(total_uj.unwrap_or(0) + delta);
            }
        }
        total_uj.map(|uj| uj as f64 / 1e6)
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(root: &Path, n: u32, name: &str, uj: u64) {
        let d = root.join(format!("intel-rapl:{n}"));
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("name"), format!("{name}\n")).expect("name");
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).expect("energy");
        std::fs::write(d.join("max_energy_range_uj"), "1000000\n").expect("range");
    }

    #[test]
    fn package_deltas_are_summed_and_wraps_handled() {
        let root = tempfile::tempdir().expect("tmp");
        domain(root.path(), 0, "package-0", 100);
        domain(root.path(), 1, "package-1", 999_000);
        domain(root.path(), 2, "psys", 5); // not a package: ignored
        let mut r = Rapl::discover(root.path()).expect("found");
        assert_eq!(r.delta_j(), None, "first reading has no delta");
        domain(root.path(), 0, "package-0", 600_100); // +0.6 J
        domain(root.path(), 1, "package-1", 1_000); // wrapped: +0.002 J
        let d = r.delta_j().expect("delta");
        assert!((d - 0.602).abs() < 1e-9, "{d}");
    }

    #[test]
    fn no_powercap_means_no_energy() {
        let root = tempfile::tempdir().expect("tmp");
        assert!(Rapl::discover(root.path()).is_none());
        assert!(Rapl::discover(Path::new("/nonexistent")).is_none());
    }
}
