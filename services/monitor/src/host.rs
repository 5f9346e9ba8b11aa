//! Host inventory beyond CPU and memory: instruction-set features, disks and
//! network interfaces, read from the kernel (never guessed).

use hwsched_proto::v1::{DiskInfo, NicInfo};
use sysinfo::{DiskKind, Disks, Networks};

/// ISA features that change which kernels a test can run, as the kernel names them.
const X86_FEATURES: &[&str] = &[
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
];
const ARM_FEATURES: &[&str] = &["asimd", "sve", "sve2", "bf16", "i8mm", "sme"];

/// Features from the `flags` (x86) or `Features` (arm) line of `/proc/cpuinfo`.
/// ARM's "asimd" is reported as "neon".
pub fn isa_features(cpuinfo: &str) -> Vec<String> {
    let line = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v)
        .unwrap_or("");
    let have: std::collections::HashSet<&str> = line.split_whitespace().collect();
    X86_FEATURES
        .iter()
        .chain(ARM_FEATURES)
        .filter(|f| have.contains(*f))
        .map(|f| if *f == "asimd" { "neon".to_string() } else { f.to_string() })
        .collect()
}

/// This host's ISA features (empty where /proc/cpuinfo is not readable).
pub fn host_isa_features() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo").map(|s| isa_features(&s)).unwrap_or_default()
}

/// Real block devices (pseudo file systems left out), one entry per device.
pub fn disks() -> Vec<DiskInfo> {
    let Ok(list) = Disks::new_with_refreshed_list() else { return vec![] };
    let mut out: Vec<DiskInfo> = Vec::new();
    for d in list.iter() {
        let name = d.name().to_string_lossy().trim_start_matches("/dev/").to_string();
        let fs = d.file_system().to_string_lossy().to_string();
        if d.total_space() == 0
            || matches!(fs.as_str(), "overlay" | "tmpfs" | "squashfs")
            || out.iter().any(|o| o.name == name)
        {
            continue;
        }
        out.push(DiskInfo {
            name,
            mount_point: d.mount_point().to_string_lossy().to_string(),
            file_system: fs,
            total_mb: d.total_space() / (1024 * 1024),
            kind: match d.kind() {
                DiskKind::SSD => "ssd",
                DiskKind::HDD => "hdd",
                _ => "unknown",
            }
            .into(),
            removable: d.is_removable(),
        });
    }
    out
}

/// Network interfaces except loopback, with link speed where the driver reports one.
pub fn nics() -> Vec<NicInfo> {
    let Ok(nets) = Networks::new_with_refreshed_list() else { return vec![] };
    let mut out: Vec<NicInfo> = nets
        .iter()
        .filter(|(name, _)| name.to_str() != Some("lo"))
        .map(|(name, n)| NicInfo {
            name: name.to_string_lossy().to_string(),
            // sysinfo reports bits per second
            speed_mbps: n.receive_link_speed().or(n.transmit_link_speed()).map_or(0, |bps| bps / 1_000_000),
            mac: n.mac_address().to_string(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_flags_are_filtered_to_the_ones_that_matter() {
        let info = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile hypervisor\n";
        assert_eq!(isa_features(info), vec!["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]);
    }

    #[test]
    fn arm_asimd_is_neon() {
        let info = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve i8mm\n";
        assert_eq!(isa_features(info), vec!["neon", "sve", "i8mm"]);
    }

    #[test]
    fn this_hosts_features_match_proc_cpuinfo() {
        let raw = std::fs::read_to_string("/proc/cpuinfo").expect("linux");
        let flags_line = raw.lines().find(|l| l.starts_with("flags") || l.starts_with("Features")).unwrap_or("");
        for f in host_isa_features() {
            let kernel_name = if f == "neon" { "asimd".to_string() } else { f.clone() };
            assert!(flags_line.split_whitespace().any(|w| w == kernel_name), "{f} not in /proc/cpuinfo");
        }
    }

    #[test]
    fn disks_and_nics_match_the_kernel() {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("linux");
        for d in disks() {
            assert!(d.total_mb > 0, "{d:?}");
            assert!(
                mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(d.mount_point.as_str())),
                "{d:?} not mounted"
            );
        }
        let sys_net: Vec<String> = std::fs::read_dir("/sys/class/net")
            .expect("sysfs")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .filter(|n| n != "lo")
            .collect();
        let mut ours: Vec<String> = nics().into_iter().map(|n| n.name).collect();
        let mut theirs = sys_net;
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
