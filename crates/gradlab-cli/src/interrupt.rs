//! Ctrl-C for long commands (`gradlab lab`): the first SIGINT asks the work to stop at the
//! next safe point (after the training run in progress has written its files), the second
//! exits at once with status 130.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first Ctrl-C.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The exit status of a command stopped by SIGINT (128 + 2, as shells report it).
pub const EXIT_STATUS: i32 = 130;

/// The error of work stopped at a safe point after Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C)")
    }
}

impl std::error::Error for Interrupted {}

/// Installs the handler: the first SIGINT sets the request, the second exits.
pub fn install() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: stopping now");
            std::process::exit(EXIT_STATUS);
        }
        eprintln!(
            "\ninterrupted: finishing the current run, then writing the report of what is \
             done (Ctrl-C again stops at once)"
        );
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A safe point: `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> anyhow::Result<()> {
    if requested() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Whether `error` is (or was caused by) an interruption.
pub fn caused(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Interrupted>())
}
