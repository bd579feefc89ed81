//! A training run's output folder: one run at a time, and a fresh run never destroys another
//! run's files by accident.
//!
//! [`RunLock`] holds an exclusive lock (the operating system's advisory file lock on
//! `.gradlab.lock`, released when the process ends, however it ends) for the life of a run:
//! a second run into the same folder fails at once, naming the folder and the process that
//! holds it. [`check_fresh`] refuses a fresh run into a folder that already has files,
//! unless the user asked to overwrite.

use crate::{Error, Result};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".gradlab.lock";

/// An exclusive lock on an output folder, released on drop.
#[derive(Debug)]
pub struct RunLock {
    file: std::fs::File,
    path: PathBuf,
}

impl RunLock {
    /// Locks `dir` (which must exist), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |e: std::io::Error| Error::io(&path, e);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::setting(
                    "--out",
                    format!(
                        "{} is in use by another gradlab run ({}): wait for it to finish or \
                         choose another --out",
                        dir.display(),
                        match holder.trim() {
                            "" => "a process that has not written its id yet".to_string(),
                            pid => format!("process {pid}"),
                        }
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// The entries of `dir` other than the lock file (none when it does not exist).
pub fn contents(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK_FILE)
        .collect();
    names.sort();
    Ok(names)
}

/// A fresh run may use `dir` when it is empty or absent, or when `overwrite` is set.
pub fn check_fresh(dir: &Path, overwrite: bool) -> Result<()> {
    let names = contents(dir)?;
    if names.is_empty() || overwrite {
        return Ok(());
    }
    let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
    Err(Error::setting(
        "--out",
        format!(
            "--out {} is not empty ({}{}): pass --resume {} to continue the run there, \
         --overwrite to replace it, or choose an empty folder",
            dir.display(),
            shown.join(", "),
            if names.len() > shown.len() {
                ", …"
            } else {
                ""
            },
            dir.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_naming_the_holder() {
        let dir = std::env::temp_dir().join(format!("gradlab-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::acquire(&dir).unwrap();
        let e = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another gradlab run"), "{e}");
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        RunLock::acquire(&dir).unwrap();
        assert!(contents(&dir).unwrap().is_empty());
        check_fresh(&dir, false).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), b"{}\n").unwrap();
        let e = check_fresh(&dir, false).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl") && e.contains("--overwrite"),
            "{e}"
        );
        check_fresh(&dir, true).unwrap();
    }
}
