//! The lab's progress: one bar per study on a terminal, counting its training runs, with an
//! ETA from the previous lab in the same folder (how many runs the study took and how long),
//! and the current run's step in the message; plain lines elsewhere.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// The bar of the study in progress, if any (training runs report to it).
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A study's progress, from start to [`StudyProgress::finish`].
pub(super) struct StudyProgress {
    id: String,
    started: Instant,
    runs_before: usize,
    timings: PathBuf,
}

fn read_timings(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}))
}

impl StudyProgress {
    /// Starts study `id` (`name` shown), number `index` of `total`, in the lab folder `out`.
    pub(super) fn start(out: &Path, id: &str, name: &str, index: usize, total: usize) -> Self {
        let timings = out.join("data/lab_timings.json");
        let before = read_timings(&timings);
        let expected = before[id]["runs"].as_u64().filter(|&n| n > 0);
        let seconds = before[id]["seconds"].as_f64();
        let prefix = format!("[{index}/{total}] {name}");
        if std::io::stderr().is_terminal() {
            let bar = match expected {
                Some(n) => {
                    let b = ProgressBar::new(n);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:25}] {pos}/{len} runs, {elapsed} (ETA {eta}) {msg}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    );
                    b
                }
                None => {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix} {spinner} {pos} runs, {elapsed} (first lab here: no ETA yet) {msg}",
                        )
                        .expect("template"),
                    );
                    b
                }
            };
            bar.set_prefix(prefix);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            *BAR.lock().expect("progress") = Some(bar);
        } else {
            eprintln!(
                "{prefix}{}",
                match (expected, seconds) {
                    (Some(n), Some(s)) => format!(" (last time: {n} runs, {s:.0} s)"),
                    _ => String::new(),
                }
            );
        }
        StudyProgress {
            id: id.to_string(),
            started: Instant::now(),
            runs_before: super::runs::finished_runs(),
            timings,
        }
    }

    /// Ends the study and records its runs and time for the next lab's ETA.
    pub(super) fn finish(self) {
        if let Some(bar) = BAR.lock().expect("progress").take() {
            bar.finish_and_clear();
        }
        let runs = super::runs::finished_runs() - self.runs_before;
        let seconds = self.started.elapsed().as_secs_f64();
        let mut all = read_timings(&self.timings);
        all[&self.id] = json!({"runs": runs, "seconds": seconds});
        // The timings only serve the next ETA: a failure to write them is not the lab's.
        let _ = gradlab::io::write_atomic(
            &self.timings,
            serde_json::to_string_pretty(&all)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
}

/// A training run finished (or was reused).
pub(super) fn run_finished() {
    if let Some(bar) = BAR.lock().expect("progress").as_ref() {
        bar.inc(1);
    }
}

/// Prints `line` above the bar (or on its own where there is none).
pub(super) fn note(line: &str) {
    match BAR.lock().expect("progress").as_ref() {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// The run in progress reached `step` of `total`.
pub(super) fn run_step(name: &str, step: u64, total: u64) {
    if let Some(bar) = BAR.lock().expect("progress").as_ref() {
        bar.set_message(format!("{name}: step {step}/{total}"));
    }
}
