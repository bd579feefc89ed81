//! The IDX reader on thousands of random files: headers with every magic number and size
//! (zero, tiny, overflowing), bodies too short, too long or exact, plain or gzipped. Each
//! is read or refused naming the file, never a panic, and what is read is consistent.

use gradlab_candle::data;
use proptest::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-idx-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 32-bit header field: mostly small, sometimes 0 or enormous.
fn dimension() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..6, 1 => Just(0u32), 1 => any::<u32>()]
}

/// A magic number: mostly the right ones.
fn magic() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(2051u32), 3 => Just(2049u32), 1 => any::<u32>()]
}

/// Header words, then a body whose length is near what the header promises (or random).
fn idx_file(words: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        magic(),
        prop::collection::vec(dimension(), words),
        -3i64..4,
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
    )
        .prop_map(move |(magic, dims, slack, noise, truncate_header)| {
            let mut bytes = magic.to_be_bytes().to_vec();
            for d in &dims {
                bytes.extend(d.to_be_bytes());
            }
            let promised = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            let len = if promised < 4096 {
                (promised as i64 + slack).max(0) as usize
            } else {
                noise.len()
            };
            bytes.extend(
                (0..len).map(|i| noise.get(i % noise.len().max(1)).copied().unwrap_or(3) % 12),
            );
            if truncate_header {
                bytes.truncate(bytes.len().min(1 + (len % 20)));
            }
            bytes
        })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(path: &Path, bytes: &[u8], gzipped: bool) {
    std::fs::write(path, if gzipped { gzip(bytes) } else { bytes.to_vec() }).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn random_idx_files_are_read_or_refused_by_name(
        images in idx_file(3),
        labels in idx_file(1),
        gzipped in any::<bool>(),
        case in any::<u64>(),
    ) {
        let dir = scratch();
        let img = dir.join(format!("images-{case}"));
        let lab = dir.join(format!("labels-{case}"));
        write(&img, &images, gzipped);
        write(&lab, &labels, gzipped);
        match data::read_pair(&img, &lab) {
            Ok(set) => {
                prop_assert!(set.rows >= 1 && set.cols >= 1);
                prop_assert_eq!(set.images.len(), set.len() * set.rows * set.cols);
                prop_assert!(set.labels.iter().all(|&l| l <= 9));
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(
                    e.contains(&img.display().to_string()) || e.contains(&lab.display().to_string()),
                    "the error names no file: {}", e
                );
            }
        }
        std::fs::remove_file(&img).unwrap();
        std::fs::remove_file(&lab).unwrap();
    }
}
