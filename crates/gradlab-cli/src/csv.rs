//! A small CSV writer (RFC 4180 quoting) whose files are written atomically.

use anyhow::Context;
use std::fmt::Write;
use std::path::Path;

/// Rows of text cells under a header.
pub struct Table {
    text: String,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        let mut t = Table {
            text: String::new(),
        };
        t.row(header.iter().copied());
        t
    }

    /// Appends a row.
    pub fn row<'a>(&mut self, cells: impl IntoIterator<Item = &'a str>) {
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            if cell.contains([',', '"', '\n', '\r']) {
                let _ = write!(self.text, "\"{}\"", cell.replace('"', "\"\""));
            } else {
                self.text.push_str(cell);
            }
        }
        self.text.push('\n');
    }

    /// Writes the table to `path` atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        gradlab::io::write_atomic(path, self.text.as_bytes())
            .with_context(|| format!("writing the CSV file {}", path.display()))
    }
}

/// Formats a number so that it reads back exactly.
pub fn num(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else {
        format!("{x:?}")
    }
}
