//! Downloading an attempt's artifacts from the Object Store `hws_artifacts`:
//! each file is written only inside the directory given (a path that is
//! absolute, climbs out with `..`, or goes through a symlink there is
//! refused), through a temporary file that replaces the target only once
//! its SHA-256 digest and size match what the result lists.

use std::path::{Component, Path, PathBuf};

use hwsched_bus::objects;
use hwsched_proto::v1::{Artifact, ExecutionResult};
use tokio::io::AsyncWriteExt;

use crate::{Client, Error};

impl Client {
    /// Downloads `a` (of `result`) into `dir`; returns where it was written.
    pub async fn download_artifact(
        &self,
        result: &ExecutionResult,
        a: &Artifact,
        dir: &Path,
    ) -> Result<PathBuf, Error> {
        let target = artifact_path(dir, &a.path)?;
        let expected = objects::artifact_object(&result.task_id, result.attempt, &a.path);
        if a.object != expected {
            return Err(Error::Output(format!(
                "{}: object {:?} is not where its path says ({expected:?})",
                a.path, a.object
            )));
        }
        let bucket = self.bus.subjects().artifacts_bucket();
        let store =
            hwsched_bus::streams::object_store(&self.bus, &bucket).await.map_err(|e| Error::bus("artifacts", e))?;
        let object = store.get(&a.object).await.map_err(|e| Error::Output(format!("{bucket}/{}: {e}", a.object)))?;
        let parent = target.parent().unwrap_or(dir);
        make_dirs(dir, parent)?;
        let tmp = parent.join(format!(".hwsched-download-{}", uuid::Uuid::new_v4().simple()));
        let written = write_verified(object, &tmp, a).await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &target).await.map_err(|e| Error::Output(format!("{}: {e}", target.display())))?;
        Ok(target)
    }
}

async fn write_verified(
    object: async_nats::jetstream::object_store::Object,
    tmp: &Path,
    a: &Artifact,
) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Output(format!("{}: {e}", a.path));
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(tmp).await.map_err(io)?;
    let mut reader = objects::Hashing::new(object);
    tokio::io::copy(&mut reader, &mut file).await.map_err(io)?;
    file.flush().await.map_err(io)?;
    let size = reader.bytes();
    let digest = reader.digest();
    if digest != a.digest || size != a.size {
        return Err(Error::Output(format!(
            "{}: downloaded {size} bytes with digest {digest}, the result lists {} bytes with {}",
            a.path, a.size, a.digest
        )));
    }
    Ok(())
}

/// `dir`/`path` for an artifact path that stays inside `dir`: relative,
/// '/'-separated, no `..`, `.` or empty component, no control character.
pub fn artifact_path(dir: &Path, path: &str) -> Result<PathBuf, Error> {
    let refuse = |why: &str| {
        Err(Error::Output(format!("artifact path {:?} refused: {why}", path.chars().take(120).collect::<String>())))
    };
    if let Err(why) = hwsched_placement::files::relative_pattern(path) {
        return refuse(why);
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c.contains('\\')) {
        return refuse("empty, \".\" or backslashed component");
    }
    let rel = Path::new(path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return refuse("not a plain relative path");
    }
    Ok(dir.join(rel))
}

/// Creates `parent` below `dir`, refusing to go through a symlink on the way.
fn make_dirs(dir: &Path, parent: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Output(format!("{}: {e}", dir.display())))?;
    let rel = parent
        .strip_prefix(dir)
        .map_err(|_| Error::Output(format!("{} is outside {}", parent.display(), dir.display())))?;
    let mut p = dir.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Output(format!("{} is a symlink: not written through", p.display())))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::Output(format!("{} exists and is not a directory", p.display()))),
            Err(_) => std::fs::create_dir(&p).map_err(|e| Error::Output(format!("{}: {e}", p.display())))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_artifact_paths_are_refused() {
        let dir = Path::new("/tmp/get");
        assert_eq!(artifact_path(dir, "out/a.png").expect("plain"), PathBuf::from("/tmp/get/out/a.png"));
        for bad in ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/./b", "", "a\nb", "a\\..\\b", "a/"] {
            assert!(artifact_path(dir, bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn directories_are_not_made_through_symlinks() {
        let d = tempfile::tempdir().expect("dir");
        let out = tempfile::tempdir().expect("dir");
        std::os::unix::fs::symlink(out.path(), d.path().join("link")).expect("link");
        assert!(make_dirs(d.path(), &d.path().join("link/sub")).is_err());
        make_dirs(d.path(), &d.path().join("a/b")).expect("plain dirs");
        assert!(d.path().join("a/b").is_dir());
    }
}
