//! Helpers shared by the integration tests.

use std::process::Command;

/// The path of an installed Chromium (or Chrome), if any.
pub fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            Command::new("which")
                .arg(name)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
}

/// Flags for a headless Chromium on a machine without a network: no GPU, no background
/// connections (refused here, many at a time), a quiet first run.
pub const QUIET_FLAGS: &[&str] = &[
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
