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

/// What is at `path` when it is not a regular file (or a link to one): a folder, a FIFO, a
/// device, a dangling link or a link loop, named. `Ok(false)` when nothing is there.
fn check_regular_file(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(m) => Err(Error::file(
            path,
            format!(
                "is {}, not a regular file",
                describe_file_type(&m.file_type())
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::symlink_metadata(path) {
                Ok(_) => Err(Error::file(
                    path,
                    "is a symbolic link to nothing (its target does not exist)",
                )),
                Err(_) => Ok(false),
            }
        }
        Err(e) => Err(Error::file(path, format!("cannot be opened: {e}"))),
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

/// An IDX file opened for reading: through a gzip decoder when it starts with the gzip
/// magic bytes. Callers read the header first and then at most the size it promises, so a
/// small compressed file cannot expand into memory without bound (a "gzip bomb").
struct IdxReader<'a> {
    path: &'a Path,
    gzip: bool,
    inner: Box<dyn Read>,
}

impl<'a> IdxReader<'a> {
    fn open(path: &'a Path) -> Result<Self> {
        if !check_regular_file(path)? {
            return Err(Error::file(path, "missing file"));
        }
        let mut file = std::fs::File::open(path)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let mut magic = Vec::with_capacity(2);
        (&mut file)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        let gzip = magic == [0x1f, 0x8b];
        let head = std::io::Cursor::new(magic).chain(file);
        let inner: Box<dyn Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(head))
        } else {
            Box::new(head)
        };
        Ok(IdxReader { path, gzip, inner })
    }

    /// The next bytes, at most `limit` of them (fewer at the end of the file).
    fn read_at_most(&mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.inner)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| {
                if self.gzip {
                    Error::file(self.path, format!("broken gzip data: {e}"))
                } else {
                    Error::file(self.path, format!("cannot read: {e}"))
                }
            })?;
        Ok(out)
    }

    /// The body after the header: exactly `expected` bytes, or an error saying how the file
    /// differs from what its header promises (`promise` describes it).
    fn body(&mut self, expected: usize, promise: &str) -> Result<Vec<u8>> {
        let body = self.read_at_most(expected as u64 + 1)?;
        if body.len() == expected {
            return Ok(body);
        }
        let holds = if body.len() > expected {
            format!("more than {expected} bytes")
        } else {
            format!("{} bytes", body.len())
        };
        Err(Error::file(
            self.path,
            format!(
                "truncated or oversized: the header promises {promise}, the file holds {holds}"
            ),
        ))
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads an IDX image file (magic 2051): `(count, rows, cols, pixels)`.
pub fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let mut reader = IdxReader::open(path)?;
    let bytes = reader.read_at_most(16)?;
    if bytes.len() < 16 {
        return Err(Error::file(
            path,
            format!("too short for an IDX image header ({} bytes)", bytes.len()),
        ));
    }
    let magic = be_u32(&bytes, 0);
    if magic != 2051 {
        return Err(Error::file(
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
        return Err(Error::file(
            path,
            format!(
                "the header gives images of {rows}×{cols} pixels: each side must be at least 1"
            ),
        ));
    }
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| Error::file(path, "impossible image dimensions"))?;
    let body = reader.body(
        expected,
        &format!("{n} images of {rows}×{cols} ({expected} bytes)"),
    )?;
    Ok((n, rows, cols, body))
}

/// Reads an IDX label file (magic 2049).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let mut reader = IdxReader::open(path)?;
    let bytes = reader.read_at_most(8)?;
    if bytes.len() < 8 {
        return Err(Error::file(
            path,
            format!("too short for an IDX label header ({} bytes)", bytes.len()),
        ));
    }
    let magic = be_u32(&bytes, 0);
    if magic != 2049 {
        return Err(Error::file(
            path,
            format!("wrong magic number {magic}: an IDX label file has 2049"),
        ));
    }
    let n = be_u32(&bytes, 4) as usize;
    let body = reader.body(n, &format!("{n} labels"))?;
    if let Some((i, l)) = body.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(Error::file(
            path,
            format!("label {i} is {l}, not a digit class 0-9"),
        ));
    }
    Ok(body)
}

/// Reads a pair of image and label files.
pub fn read_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let (n, rows, cols, pixels) = read_images(images)?;
    let labels_v = read_labels(labels)?;
    if labels_v.len() != n {
        return Err(Error::file(
            images,
            format!(
                "holds {n} images but {} holds {} labels",
                labels.display(),
                labels_v.len()
            ),
        ));
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
        return Err(Error::file(&dir, format!("only {} examples", all.len())));
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
    Err(Error::file(
        dir,
        format!("missing file {stem} (or {stem}.gz); expected the standard MNIST file names"),
    ))
}

/// Full MNIST / Fashion-MNIST / KMNIST from their standard file names in `dir`.
pub fn load_dir(dir: &Path) -> Result<Split> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) => {
            return Err(Error::file(
                dir,
                format!("is {}, not a folder", describe_file_type(&m.file_type())),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::file(dir, "no such folder"))
        }
        Err(e) => return Err(Error::file(dir, format!("cannot be opened: {e}"))),
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
        return Err(Error::file(
            dir,
            format!(
                "train images are {}×{} but test images {}×{}",
                train.rows, train.cols, test.rows, test.cols
            ),
        ));
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
