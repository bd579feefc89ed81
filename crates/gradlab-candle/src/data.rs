//! MNIST-format data: an IDX reader (gzip or raw) and the train/test splits.
//!
//! The bundled 10,000 digits (`data/` in the repository) are split 8,000/2,000 (the files
//! are shuffled once already, so the split is a fair sample). `--data DIR` reads the
//! standard file names of full MNIST, Fashion-MNIST or KMNIST:
//! `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`
//! and `t10k-labels-idx1-ubyte[.gz]`. Every problem names the file and what is wrong.

use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Images and labels; pixels scaled to [0, 1] then standardised with MNIST's mean and
/// standard deviation (0.1307, 0.3081), as PyTorch's MNIST examples do.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len × rows × cols` pixels, row-major.
    pub images: Vec<f32>,
    /// Labels 0–9.
    pub labels: Vec<u8>,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// The examples' identity, whatever path they were read from: count, image size and the
    /// CRC-32 of the pixels and of the labels (`8000x28x28 crc32 1a2b3c4d/5e6f7a8b`). Any
    /// changed pixel or label changes it.
    pub fn fingerprint(&self) -> String {
        let mut pixels = crc32fast::Hasher::new();
        let mut bytes = [0u8; 4096];
        for chunk in self.images.chunks(bytes.len() / 4) {
            for (out, x) in bytes.chunks_exact_mut(4).zip(chunk) {
                out.copy_from_slice(&x.to_le_bytes());
            }
            pixels.update(&bytes[..chunk.len() * 4]);
        }
        format!(
            "{}x{}x{} crc32 {:08x}/{:08x}",
            self.len(),
            self.rows,
            self.cols,
            pixels.finalize(),
            crc32fast::hash(&self.labels)
        )
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Examples `range` as a new dataset.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let p = self.pixels();
        Dataset {
            images: self.images[range.start * p..range.end * p].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A train/test split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
    /// Where they came from.
    pub source: String,
}

/// MNIST's pixel mean and standard deviation.
pub const MNIST_MEAN: f32 = 0.1307;
/// MNIST's pixel standard deviation.
pub const MNIST_STD: f32 = 0.3081;

fn file_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}: {what}", path.display()))
}

/// What is at `path` when it is not a regular file (or a link to one): a folder, a FIFO, a
/// device, a dangling link or a link loop, named. `Ok(false)` when nothing is there.
fn check_regular_file(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(file_error(
            path,
            format!(
                "is {}, not a regular file",
                describe_file_type(&m.file_type())
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::symlink_metadata(path) {
                Ok(_) => Err(file_error(
                    path,
                    "is a symbolic link to nothing (its target does not exist)",
                )),
                Err(_) => Ok(false),
            }
        }
        Err(e) => Err(file_error(path, format!("cannot be opened: {e}"))),
    }
}

/// A file type in words.
fn describe_file_type(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    if !check_regular_file(path)? {
        return Err(file_error(path, "missing file"));
    }
    let raw = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| file_error(path, format!("broken gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads an IDX image file (magic 2051): `(count, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gzip(path)?;
    if bytes.len() < 16 {
        return Err(file_error(
            path,
            format!("too short for an IDX image header ({} bytes)", bytes.len()),
        ));
    }
    let magic = be_u32(&bytes, 0);
    if magic != 2051 {
        return Err(file_error(
            path,
            format!("wrong magic number {magic}: an IDX image file has 2051"),
        ));
    }
    let (n, rows, cols) = (
        be_u32(&bytes, 4) as usize,
        be_u32(&bytes, 8) as usize,
        be_u32(&bytes, 12) as usize,
    );
    if rows == 0 || cols == 0 {
        return Err(file_error(
            path,
            format!(
                "the header gives images of {rows}×{cols} pixels: each side must be at least 1"
            ),
        ));
    }
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| file_error(path, "impossible image dimensions"))?;
    let body = &bytes[16..];
    if body.len() != expected {
        return Err(file_error(
            path,
            format!(
                "truncated or oversized: the header promises {n} images of {rows}×{cols} ({expected} bytes), the file holds {}",
                body.len()
            ),
        ));
    }
    Ok((n, rows, cols, body.to_vec()))
}

/// Reads an IDX label file (magic 2049).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gzip(path)?;
    if bytes.len() < 8 {
        return Err(file_error(
            path,
            format!("too short for an IDX label header ({} bytes)", bytes.len()),
        ));
    }
    let magic = be_u32(&bytes, 0);
    if magic != 2049 {
        return Err(file_error(
            path,
            format!("wrong magic number {magic}: an IDX label file has 2049"),
        ));
    }
    let n = be_u32(&bytes, 4) as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(file_error(
            path,
            format!(
                "truncated or oversized: the header promises {n} labels, the file holds {}",
                body.len()
            ),
        ));
    }
    if let Some((i, l)) = body.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(file_error(
            path,
            format!("label {i} is {l}, not a digit class 0-9"),
        ));
    }
    Ok(body.to_vec())
}

/// Reads a pair of image and label files.
pub fn read_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let (n, rows, cols, pixels) = read_images(images)?;
    let labels_v = read_labels(labels)?;
    if labels_v.len() != n {
        return Err(Error::Msg(format!(
            "{} holds {n} images but {} holds {} labels",
            images.display(),
            labels.display(),
            labels_v.len()
        )));
    }
    Ok(Dataset {
        images: pixels
            .iter()
            .map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD)
            .collect(),
        labels: labels_v,
        rows,
        cols,
    })
}

/// The bundled digits' folder: `GRADLAB_DATA`, else the repository's `data/`.
pub fn bundled_dir() -> PathBuf {
    std::env::var_os("GRADLAB_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

/// The bundled 10,000 digits split 8,000 train / 2,000 test.
pub fn bundled() -> Result<Split> {
    let dir = bundled_dir();
    let all = read_pair(
        &dir.join("images-idx3-ubyte.gz"),
        &dir.join("labels-idx1-ubyte.gz"),
    )?;
    if all.len() < 10 {
        return Err(Error::Msg(format!(
            "{}: only {} examples",
            dir.display(),
            all.len()
        )));
    }
    let cut = all.len() * 4 / 5;
    Ok(Split {
        train: all.slice(0..cut),
        test: all.slice(cut..all.len()),
        source: format!(
            "bundled MNIST digits ({} train / {} test)",
            cut,
            all.len() - cut
        ),
    })
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if check_regular_file(&p)? {
            return Ok(p);
        }
    }
    Err(Error::Msg(format!(
        "{}: missing file {stem} (or {stem}.gz); expected the standard MNIST file names",
        dir.display()
    )))
}

/// Full MNIST / Fashion-MNIST / KMNIST from their standard file names in `dir`.
pub fn load_dir(dir: &Path) -> Result<Split> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(file_error(
                dir,
                format!("is {}, not a folder", describe_file_type(&m.file_type())),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(file_error(dir, "no such folder"))
        }
        Err(e) => return Err(file_error(dir, format!("cannot be opened: {e}"))),
    }
    let train = read_pair(
        &find(dir, "train-images-idx3-ubyte")?,
        &find(dir, "train-labels-idx1-ubyte")?,
    )?;
    let test = read_pair(
        &find(dir, "t10k-images-idx3-ubyte")?,
        &find(dir, "t10k-labels-idx1-ubyte")?,
    )?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::Msg(format!(
            "{}: train images are {}×{} but test images {}×{}",
            dir.display(),
            train.rows,
            train.cols,
            test.rows,
            test.cols
        )));
    }
    Ok(Split {
        source: format!(
            "{} ({} train / {} test)",
            dir.display(),
            train.len(),
            test.len()
        ),
        train,
        test,
    })
}
