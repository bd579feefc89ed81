//! `metrics.jsonl`: one JSON line per step and per epoch, each written with one call (a kill
//! never tears a line), by rank 0 only. A fresh run over an old run's folder writes its lines
//! aside (`.metrics.jsonl.partial`) until its first checkpoint; then they replace the old
//! run's, whose summary no longer describes the folder.

use super::Record;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The run's metrics file; see the module documentation.
pub(super) struct MetricsFile {
    file: Option<std::fs::File>,
    path: PathBuf,
    /// The run folder, while the lines are written aside until the first checkpoint.
    replacing: Option<PathBuf>,
}

impl MetricsFile {
    /// Opens `out`'s metrics file: truncated to the `resumed` (step, epoch) of a checkpoint,
    /// or started empty (aside, when `replacing` an old run). Ranks other than the `lead` get a
    /// file that writes nothing.
    pub(super) fn open(
        out: &Path,
        lead: bool,
        replacing: bool,
        resumed: Option<(u64, usize)>,
    ) -> Result<Self> {
        let path = out.join(if replacing {
            ".metrics.jsonl.partial"
        } else {
            "metrics.jsonl"
        });
        let file = if lead {
            match resumed {
                Some((step, epoch)) => truncate(&path, step, epoch)?,
                None => gradlab::io::write_atomic(&path, b"")?,
            }
            let file = std::fs::OpenOptions::new().append(true).open(&path);
            Some(file.map_err(|e| Error::io(&path, e))?)
        } else {
            None
        };
        Ok(MetricsFile {
            file,
            replacing: (replacing && lead).then(|| out.to_path_buf()),
            path,
        })
    }

    /// Appends one line.
    pub(super) fn write(&mut self, record: &Record) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_string(record).expect("a record is plain data");
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Called after each checkpoint: after the first, lines written aside replace the old
    /// run's metrics, and the old run's summary goes.
    pub(super) fn checkpointed(&mut self) -> Result<()> {
        let Some(out) = self.replacing.take() else {
            return Ok(());
        };
        let destination = out.join("metrics.jsonl");
        std::fs::rename(&self.path, &destination).map_err(|e| Error::io(&destination, e))?;
        self.path = destination;
        match std::fs::remove_file(out.join("summary.json")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&out, e)),
            _ => Ok(()),
        }
    }
}

/// Keeps the records of steps up to `step` and of epochs before `epoch` (what a checkpoint
/// covers), rewriting the file atomically; a line that is no record (torn by a crash) goes.
fn truncate(path: &Path, step: u64, epoch: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|line| match serde_json::from_str::<Record>(line) {
            Ok(Record::Step(s)) => s.step <= step,
            Ok(Record::Epoch(e)) => e.epoch < epoch,
            Err(_) => false,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    gradlab::io::write_atomic(path, kept.as_bytes())?;
    Ok(())
}
