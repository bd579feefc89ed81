//! File helpers: atomic writes, so that nothing already written is lost to a crash.

use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed
/// into place: readers see the old file or the new one, never a torn one.
///
/// A symbolic link at `path` is followed and its target written (atomically, beside the
/// target), not replaced by a file. Anything at `path` that is not a regular file (a folder,
/// a FIFO, a device) is refused: renaming over it would destroy it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let target = writable_target(path)?;
    write_atomic_at(&target, bytes)
}

/// Checks, before any long computation, that [`write_atomic`] could write `path`: its folder
/// exists and takes a new file, and nothing but a regular file or a link to one is there.
pub fn check_writable(path: &Path) -> Result<()> {
    let target = writable_target(path)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let probe = dir.join(format!(".gradlab-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map(|_| {
            let _ = std::fs::remove_file(&probe);
        })
        .map_err(|error| Error::Io {
            path: path.display().to_string(),
            error: match error.kind() {
                std::io::ErrorKind::NotFound => std::io::Error::new(
                    error.kind(),
                    format!("its folder {} does not exist", dir.display()),
                ),
                _ => error,
            },
        })
}

/// Where a write to `path` must land: `path` itself when absent or a regular file, the
/// final target when it is a symbolic link; an error for anything else.
fn writable_target(path: &Path) -> Result<std::path::PathBuf> {
    let refuse = |what: &str| Error::Io {
        path: path.display().to_string(),
        error: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file: refusing to replace it"),
        ),
    };
    let link = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(path.to_path_buf()),
        Ok(m) => m,
    };
    let target = if link.file_type().is_symlink() {
        match std::fs::canonicalize(path) {
            Ok(t) => t,
            // A dangling link: create its target.
            Err(_) => {
                let dest = std::fs::read_link(path).map_err(|error| Error::Io {
                    path: path.display().to_string(),
                    error,
                })?;
                match path.parent() {
                    Some(dir) if dest.is_relative() => dir.join(dest),
                    _ => dest,
                }
            }
        }
    } else {
        path.to_path_buf()
    };
    match std::fs::metadata(&target) {
        Err(_) => Ok(target),
        Ok(m) if m.is_file() => Ok(target),
        Ok(m) if m.is_dir() => Err(refuse("a folder")),
        Ok(_) => Err(refuse("a FIFO, socket or device")),
    }
}

fn write_atomic_at(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |error| Error::Io {
        path: path.display().to_string(),
        error,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("gradlab-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_are_followed_and_their_target_written() {
        let d = scratch("link");
        let target = d.join("real.txt");
        std::fs::write(&target, b"old").unwrap();
        let link = d.join("link.txt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        // A dangling relative link gets its target created.
        let dangling = d.join("dangling.txt");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(std::fs::read(d.join("made.txt")).unwrap(), b"made");
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn folders_fifos_and_devices_are_refused() {
        let d = scratch("special");
        let e = write_atomic(&d, b"x").unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        let fifo = d.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = write_atomic(&fifo, b"x").unwrap_err().to_string();
            assert!(e.contains("FIFO"), "{e}");
            assert!(std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo());
        }
        let e = write_atomic(Path::new("/dev/null"), b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device"), "{e}");
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn unwritable_paths_are_found_before_the_work() {
        let d = scratch("check");
        check_writable(&d.join("plot.svg")).unwrap();
        let e = check_writable(&d.join("missing/plot.svg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(check_writable(&d).is_err());
        assert!(
            std::fs::read_dir(&d).unwrap().next().is_none(),
            "the probe is removed"
        );
    }

    use std::os::unix::fs::FileTypeExt;
}
