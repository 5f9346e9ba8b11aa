//! Where the cgroup hierarchies are mounted (`/proc/self/mountinfo`) and the
//! monitor's own cgroup in each (`/proc/self/cgroup`).

use std::path::{Path, PathBuf};

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the hierarchy shown at the mount point ("/" unless a subtree is mounted).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// "cgroup" (v1) or "cgroup2".
    pub fstype: String,
    /// Super options: for v1, the controllers of the hierarchy.
    pub options: Vec<String>,
}

/// The cgroup mounts in `mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let f: Vec<&str> = before.split_whitespace().collect();
            let a: Vec<&str> = after.split_whitespace().collect();
            let fstype = (*a.first()?).to_string();
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                root: unescape(f.get(3)?),
                point: PathBuf::from(unescape(f.get(4)?)),
                fstype,
                options: a.get(2).map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal =
            b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        match (b[i], octal) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The own cgroup of `controller` in `/proc/self/cgroup` text ("" = the v2 line `0::`).
pub fn own_cgroup(text: &str, controller: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = if controller.is_empty() {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        hit.then(|| path.to_string())
    })
}

/// The directory of cgroup `own` (a path in the hierarchy) under `mount`; `None`
/// when the mount shows a part of the hierarchy that does not hold it.
pub fn dir_of(mount: &Mount, own: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        own
    } else {
        let rest = own.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    Some(mount.point.join(rel.trim_start_matches('/')))
}

/// Where the attempts' parent cgroup is: `parent` from the hierarchy's root
/// (absolute) or from `own_dir` (relative), else `default_name` under `own_dir`.
pub fn parent_dir(mount_point: &Path, own_dir: &Path, parent: Option<&Path>, default_name: &str) -> PathBuf {
    match parent {
        Some(p) if p.is_absolute() => mount_point.join(p.strip_prefix("/").unwrap_or(p)),
        Some(p) => own_dir.join(p),
        None => own_dir.join(default_name),
    }
}

#[cfg(test)]
mod tests {
    use super::{dir_of, own_cgroup, parent_dir, parse_mountinfo};
    use std::path::{Path, PathBuf};

    const MOUNTINFO: &str = "\
25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:1 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:2 - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 /kubepods/pod1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /mnt/with\\040space rw - cgroup cgroup rw,pids
30 25 8:1 / / rw - ext4 /dev/sda1 rw";

    #[test]
    fn cgroup_mounts_are_found_with_their_controllers() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4, "tmpfs and ext4 are not cgroups: {m:?}");
        assert_eq!(m[0].fstype, "cgroup2");
        assert_eq!(m[1].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert!(m[1].options.contains(&"cpuacct".to_string()));
        assert_eq!(m[2].root, "/kubepods/pod1");
        assert_eq!(m[3].point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn own_cgroup_is_read_per_controller() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/user.slice/a.scope\n";
        assert_eq!(own_cgroup(text, "memory").as_deref(), Some("/process_api/abc"));
        assert_eq!(own_cgroup(text, "cpuacct").as_deref(), Some("/x"));
        assert_eq!(own_cgroup(text, "").as_deref(), Some("/user.slice/a.scope"));
        assert_eq!(own_cgroup(text, "pids"), None);
    }

    #[test]
    fn own_directory_accounts_for_the_mounted_subtree() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(dir_of(&m[1], "/x"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/x")));
        assert_eq!(dir_of(&m[2], "/kubepods/pod1/c"), Some(PathBuf::from("/sys/fs/cgroup/memory/c")));
        assert_eq!(dir_of(&m[2], "/kubepods/pod10"), None, "not inside the mounted subtree");
        assert_eq!(dir_of(&m[0], "/"), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn parent_is_absolute_from_the_root_or_relative_to_the_own_cgroup() {
        let (mnt, own) = (Path::new("/cg"), Path::new("/cg/me"));
        assert_eq!(parent_dir(mnt, own, None, "hwsched-w"), PathBuf::from("/cg/me/hwsched-w"));
        assert_eq!(parent_dir(mnt, own, Some(Path::new("/ci/jobs")), "x"), PathBuf::from("/cg/ci/jobs"));
        assert_eq!(parent_dir(mnt, own, Some(Path::new("jobs")), "x"), PathBuf::from("/cg/me/jobs"));
    }
}
