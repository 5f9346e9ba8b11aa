//! Software version probes: commands whose output names a version (`python3
//! --version`). Defaults cover the common ones; operators add their own
//! (`--probe torch='python3 -c "import torch; print(torch.__version__)"'`).

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Probes run when no configuration replaces them: (name, shell command).
/// (`nvcc --version` prints a copyright line with years before its release line.)
pub const DEFAULT_PROBES: &[(&str, &str)] = &[
    ("python", "python3 --version"),
    ("gcc", "gcc -dumpfullversion"),
    ("nvcc", "nvcc --version | grep -m1 'release'"),
];

/// How long one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first word of `text` that starts with a digit, trimmed of trailing punctuation
/// ("Python 3.11.7" -> "3.11.7"; "Cuda compilation tools, release 12.4, V12.4.131" -> "12.4").
pub fn version_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .filter(|w| !w.is_empty())
}

/// Runs each probe with `sh -c`; a probe that fails, times out or prints no
/// version is left out (the software is absent, not "unknown").
pub fn run(probes: &[(String, String)]) -> BTreeMap<String, String> {
    probes.iter().filter_map(|(name, cmd)| Some((name.clone(), run_one(cmd)?))).collect()
}

fn run_one(cmd: &str) -> Option<String> {
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!(probe = cmd, "software probe timed out");
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().ok()?;
    version_in(&String::from_utf8_lossy(&out.stdout)).or_else(|| version_in(&String::from_utf8_lossy(&out.stderr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_found_in_common_outputs() {
        assert_eq!(version_in("Python 3.11.7\n").as_deref(), Some("3.11.7"));
        assert_eq!(version_in("12.2.0").as_deref(), Some("12.2.0"));
        assert_eq!(version_in("Cuda compilation tools, release 12.4, V12.4.131").as_deref(), Some("12.4"));
        assert_eq!(version_in("2.4.0+cu121").as_deref(), Some("2.4.0+cu121"));
        assert_eq!(version_in("no digits here"), None);
    }

    #[test]
    fn the_nvcc_probe_reads_the_release_not_the_copyright_years() {
        // what nvcc 13.0 printed on a GPU machine (the probe once reported "2005-2025")
        let dir = tempfile::tempdir().expect("dir");
        let fake = dir.path().join("nvcc");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\necho 'Copyright (c) 2005-2025 NVIDIA Corporation'\n\
             echo 'Built on Wed_Aug_20_01:58:59_PM_PDT_2025'\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n",
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let (_, cmd) = DEFAULT_PROBES.iter().find(|(n, _)| *n == "nvcc").expect("nvcc probe");
        let cmd = cmd.replacen("nvcc", &fake.to_string_lossy(), 1);
        assert_eq!(run(&[("nvcc".to_string(), cmd)]).get("nvcc").map(String::as_str), Some("13.0"));
    }

    #[test]
    fn probes_run_really_and_absent_software_is_left_out() {
        let probes = vec![
            ("python".to_string(), "python3 --version".to_string()),
            ("custom".to_string(), "echo tool 4.2.1".to_string()),
            ("missing".to_string(), "definitely-not-installed-xyz --version".to_string()),
            ("failing".to_string(), "echo 1.0; exit 3".to_string()),
        ];
        let found = run(&probes);
        let real = String::from_utf8(Command::new("python3").arg("--version").output().expect("python3").stdout)
            .expect("utf8");
        assert_eq!(found.get("python"), version_in(&real).as_ref());
        assert_eq!(found.get("custom").map(String::as_str), Some("4.2.1"));
        assert!(!found.contains_key("missing") && !found.contains_key("failing"), "{found:?}");
    }
}
