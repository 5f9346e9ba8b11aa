//! What this worker agrees to run, and how: an optional command allowlist, the
//! user tasks run as, a sandbox directory per attempt, and the environment a
//! task sees. A task the policy refuses is reported (status ERROR, the reason
//! in its result) and never started. The monitor's own `HWSCHED_*` variables
//! (its NATS and ClickHouse credentials among them) never reach a task.

use std::path::{Path, PathBuf};

use clap::Args;
use hwsched_proto::v1::TaskRequest;

/// Policy flags of `hwsched monitor`.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyConfig {
    /// Run only commands matching one of these: the first words of the command
    /// (`pytest`, `python3 -m pytest`: argv must start with exactly these), or
    /// `re:REGEX` matched against the whole command line (argv joined by spaces).
    /// Repeat, or newline-separated in the variable. Default: any command.
    #[arg(long = "allow-command", env = "HWSCHED_MONITOR_ALLOW_COMMANDS", value_delimiter = '\n')]
    pub allow_commands: Vec<String>,
    /// Run tasks as this user (name or numeric uid) instead of the monitor's;
    /// the monitor must run as root to switch.
    #[arg(long = "run-as", env = "HWSCHED_MONITOR_RUN_AS")]
    pub run_as: Option<String>,
    /// Run each attempt in a fresh directory under this one (removed when it
    /// ends); a task's own workdir must lie inside it.
    #[arg(long = "sandbox-dir", env = "HWSCHED_MONITOR_SANDBOX_DIR")]
    pub sandbox_dir: Option<PathBuf>,
    /// Only these variables of the monitor's environment reach tasks
    /// (comma-separated). Default: all but the monitor's HWSCHED_* ones.
    #[arg(long = "pass-env", env = "HWSCHED_MONITOR_PASS_ENV", value_delimiter = ',')]
    pub pass_env: Vec<String>,
}

#[derive(Debug)]
enum Rule {
    Words(Vec<String>),
    Regex(regex::Regex),
}

/// A user to run as.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// Name (for messages and USER).
    pub name: String,
    /// Uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory (HOME).
    pub home: PathBuf,
}

/// The validated policy.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Who tasks run as (`None`: the monitor's user).
    pub run_as: Option<RunAs>,
    sandbox: Option<PathBuf>,
    pass_env: Option<Vec<String>>,
}

impl Policy {
    /// Checks the flags: every pattern compiles, the user exists and the
    /// monitor may switch to it, the sandbox is a usable directory.
    pub fn from_config(c: &PolicyConfig) -> Result<Self, String> {
        let rules = c
            .allow_commands
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix("re:") {
                Some(re) => regex::Regex::new(re)
                    .map(Rule::Regex)
                    .map_err(|e| format!("--allow-command / HWSCHED_MONITOR_ALLOW_COMMANDS {s:?}: {e}")),
                None => Ok(Rule::Words(s.split_whitespace().map(str::to_string).collect())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let run_as = c.run_as.as_deref().map(run_as).transpose()?;
        if let Some(d) = &c.sandbox_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("--sandbox-dir / HWSCHED_MONITOR_SANDBOX_DIR {}: {e}", d.display()))?;
            if run_as.is_some() {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(d).map_err(|e| e.to_string())?.permissions().mode();
                if mode & 0o001 == 0 {
                    return Err(format!(
                        "--sandbox-dir {}: the --run-as user cannot enter it (mode {mode:o}; chmod o+x)",
                        d.display()
                    ));
                }
            }
        }
        let pass_env = (!c.pass_env.is_empty()).then(|| c.pass_env.clone());
        Ok(Self { rules, run_as, sandbox: c.sandbox_dir.clone(), pass_env })
    }

    /// Why this worker will not run `task`, if it will not.
    pub fn check(&self, task: &TaskRequest) -> Result<(), String> {
        if !self.rules.is_empty() && !self.rules.iter().any(|r| r.allows(&task.command)) {
            return Err(format!(
                "refused by this worker's policy: command {:?} is not in its allowlist",
                truncate(&task.command.join(" "))
            ));
        }
        // a bundle task's workdir is relative to its bundle (checked when the bundle is placed)
        if let (Some(root), false, true) = (&self.sandbox, task.workdir.is_empty(), task.bundle.is_empty()) {
            if !inside(Path::new(&task.workdir), root) {
                return Err(format!(
                    "refused by this worker's policy: workdir {:?} is outside its sandbox {}",
                    truncate(&task.workdir),
                    root.display()
                ));
            }
        }
        Ok(())
    }

    /// A fresh directory for one attempt (owned by the run-as user), when sandboxed.
    pub fn sandbox_for(&self, task_id: &str, attempt: u32) -> Result<Option<PathBuf>, String> {
        let Some(root) = &self.sandbox else { return Ok(None) };
        self.sandbox_under(root, task_id, attempt).map(Some)
    }

    /// Whether attempts get a sandbox under `--sandbox-dir`.
    pub fn sandboxed(&self) -> bool {
        self.sandbox.is_some()
    }

    /// A fresh directory for one attempt under `root` (owned by the run-as user).
    pub fn sandbox_under(&self, root: &Path, task_id: &str, attempt: u32) -> Result<PathBuf, String> {
        let dir = root.join(format!("{task_id}-{attempt}"));
        // a leftover of an earlier monitor is replaced
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("sandbox {}: {e}", dir.display()))?;
        if let Some(u) = &self.run_as {
            nix::unistd::chown(&dir, Some(u.uid.into()), Some(u.gid.into()))
                .map_err(|e| format!("sandbox {}: chown to {}: {e}", dir.display(), u.name))?;
        }
        Ok(dir)
    }

    /// The environment a task starts with, from the monitor's: without its
    /// `HWSCHED_*` variables, and only the `--pass-env` ones when given; the
    /// run-as user's HOME and USER.
    pub fn environment(&self, inherited: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = inherited
            .filter(|(k, _)| !k.starts_with("HWSCHED_"))
            .filter(|(k, _)| self.pass_env.as_ref().is_none_or(|allow| allow.contains(k)))
            .filter(|(k, _)| self.run_as.is_none() || (k != "HOME" && k != "USER" && k != "LOGNAME"))
            .collect();
        if let Some(u) = &self.run_as {
            env.push(("HOME".into(), u.home.display().to_string()));
            env.push(("USER".into(), u.name.clone()));
            env.push(("LOGNAME".into(), u.name.clone()));
        }
        env
    }
}

impl Rule {
    fn allows(&self, argv: &[String]) -> bool {
        match self {
            Rule::Words(words) => argv.len() >= words.len() && argv.iter().zip(words).all(|(a, w)| a == w),
            Rule::Regex(re) => re.is_match(&argv.join(" ")),
        }
    }
}

/// Whether `path` lies inside `root` once `..` and links are resolved.
fn inside(path: &Path, root: &Path) -> bool {
    let (Ok(root), Ok(path)) = (root.canonicalize(), path.canonicalize()) else { return false };
    path.starts_with(root)
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

fn run_as(spec: &str) -> Result<RunAs, String> {
    const F: &str = "--run-as / HWSCHED_MONITOR_RUN_AS";
    let user = match spec.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(spec),
    }
    .map_err(|e| format!("{F} {spec:?}: {e}"))?
    .ok_or_else(|| format!("{F} {spec:?}: no such user"))?;
    if !nix::unistd::geteuid().is_root() && nix::unistd::geteuid() != user.uid {
        return Err(format!("{F} {spec:?}: the monitor must run as root to run tasks as another user"));
    }
    Ok(RunAs { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), home: user.dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(argv: &[&str]) -> TaskRequest {
        TaskRequest { command: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn policy(allow: &[&str]) -> Policy {
        Policy::from_config(&PolicyConfig {
            allow_commands: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .expect("valid policy")
    }

    #[test]
    fn the_allowlist_matches_leading_words_or_a_regex() {
        let p = policy(&["pytest", "python3 -m pytest", "re:^make test( |$)"]);
        for ok in [&["pytest"][..], &["pytest", "-k", "x"], &["python3", "-m", "pytest", "t.py"], &["make", "test"]] {
            assert!(p.check(&task(ok)).is_ok(), "{ok:?}");
        }
        for no in [
            &["python3", "-c", "import os"][..],
            &["/usr/bin/pytest"],
            &["pytestx"],
            &["sh", "-c", "pytest; rm -rf /"],
            &["make", "tests"],
        ] {
            let e = p.check(&task(no)).expect_err("refused");
            assert!(e.contains("not in its allowlist"), "{e}");
        }
        assert!(policy(&[]).check(&task(&["anything"])).is_ok(), "no list: everything runs");
        assert!(
            Policy::from_config(&PolicyConfig { allow_commands: vec!["re:(".into()], ..Default::default() }).is_err()
        );
    }

    #[test]
    fn a_workdir_must_lie_inside_the_sandbox() -> Result<(), String> {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir(root.path().join("inner")).map_err(|e| e.to_string())?;
        let p = Policy::from_config(&PolicyConfig { sandbox_dir: Some(root.path().into()), ..Default::default() })?;
        let mut t = task(&["true"]);
        t.workdir = root.path().join("inner").display().to_string();
        assert!(p.check(&t).is_ok());
        for outside in [format!("{}/inner/../..", root.path().display()), "/etc".into(), "/nonexistent".into()] {
            t.workdir = outside;
            assert!(p.check(&t).expect_err("outside").contains("outside its sandbox"), "{}", t.workdir);
        }
        let dir = p.sandbox_for("t-1", 2)?.expect("a directory");
        assert!(dir.is_dir() && dir.ends_with("t-1-2"));
        Ok(())
    }

    #[test]
    fn tasks_never_see_the_monitors_own_settings() {
        let inherited = || {
            [
                ("PATH", "/bin"),
                ("HWSCHED_NATS_PASSWORD", "secret"),
                ("HWSCHED_CLICKHOUSE_PASSWORD", "s2"),
                ("LANG", "C"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        let env = policy(&[]).environment(inherited());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG"]);
        let only_path =
            Policy::from_config(&PolicyConfig { pass_env: vec!["PATH".into()], ..Default::default() }).expect("policy");
        assert_eq!(only_path.environment(inherited()), vec![("PATH".to_string(), "/bin".to_string())]);
    }
}
