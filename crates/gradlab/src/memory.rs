//! Will it fit? Sizes that come from the user (parameter counts, layer widths) are checked
//! against the memory available before anything is allocated, so that a typo is an error
//! with the figures, not an abort ("memory allocation of 313600000000 bytes failed").

use crate::{Error, Result};

/// The memory available to a new allocation, from `/proc/meminfo`'s `MemAvailable` (Linux);
/// `None` where it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// An error unless `bytes` (what `what` needs, `None` when the count overflowed) fits in the
/// available memory (when that is unknown, only an overflow is refused).
pub fn check_fits(what: &str, bytes: Option<u128>) -> Result<()> {
    let available = available_bytes();
    let fits = match (bytes, available) {
        (None, _) => false,
        (Some(bytes), Some(free)) => bytes <= free as u128,
        (Some(_), None) => true,
    };
    if fits {
        return Ok(());
    }
    Err(Error::Memory {
        what: what.to_string(),
        needed: bytes,
        available,
    })
}

/// The words of [`Error::Memory`].
pub(crate) fn describe(what: &str, needed: Option<u128>, available: Option<u64>) -> String {
    match (needed, available) {
        (None, _) => format!(
            "{what} needs more bytes than a 128-bit count holds: far more memory than any \
             machine has"
        ),
        (Some(bytes), Some(free)) => format!(
            "{what} needs {} but only {} of memory is available",
            gigabytes(bytes),
            gigabytes(free as u128)
        ),
        (Some(bytes), None) => format!("{what} needs {}", gigabytes(bytes)),
    }
}

fn gigabytes(bytes: u128) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_refused_with_the_figures() {
        let e = check_fits("a model of 1e16 parameters", Some(4 * 10u128.pow(16)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("40000000.0 GB") && e.contains("available"),
            "{e}"
        );
        assert!(check_fits("x", None).is_err());
        check_fits("a small buffer", Some(1024)).unwrap();
        assert!(available_bytes().is_some_and(|b| b > 0));
    }
}
