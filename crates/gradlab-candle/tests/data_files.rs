//! MNIST-format files: a damaged or mismatched file is refused naming the file and the
//! problem; a folder with the standard file names loads.

use gradlab_candle::data;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradlab-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn idx_images(n: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [2051u32, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, body));
    v
}

fn idx_labels(n: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [2049u32, n] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

#[test]
fn bad_files_name_the_file_and_the_problem() {
    let d = scratch("bad");
    let img = d.join("img");
    let lab = d.join("lab");
    let expect = |needle: &str| {
        let e = data::read_pair(&img, &lab).unwrap_err().to_string();
        assert!(e.contains(needle), "expected '{needle}' in: {e}");
    };
    write(&lab, &idx_labels(2, &[1, 2]));
    write(&img, &idx_images(2, 3, 3, 18));
    assert_eq!(data::read_pair(&img, &lab).unwrap().len(), 2);
    write(&img, &idx_images(2, 3, 3, 17));
    expect("truncated");
    expect(&img.display().to_string());
    write(&img, &{
        let mut v = idx_images(2, 3, 3, 18);
        v[3] = 1;
        v
    });
    expect("wrong magic number");
    write(&img, &idx_images(3, 3, 3, 27));
    expect("holds 3 images but");
    write(&img, &idx_images(2, 3, 3, 18));
    write(&lab, &idx_labels(2, &[1, 12]));
    expect("not a digit class");
    write(&img, &[1, 2, 3]);
    expect("too short");
    write(&img, &idx_images(2, 0, 0, 0));
    expect("images of 0×0 pixels: each side must be at least 1");
    std::fs::remove_file(&img).unwrap();
    expect("missing file");
    // What is not a regular file is named for what it is, never read (a FIFO would hang).
    std::fs::create_dir(&img).unwrap();
    expect("is a folder, not a regular file");
    std::fs::remove_dir(&img).unwrap();
    #[cfg(unix)]
    {
        let status = std::process::Command::new("mkfifo")
            .arg(&img)
            .status()
            .unwrap();
        assert!(status.success());
        expect("is a FIFO (named pipe), not a regular file");
        std::fs::remove_file(&img).unwrap();
        std::os::unix::fs::symlink(&img, &img).unwrap();
        expect("cannot be opened");
        expect("symbolic links");
        std::fs::remove_file(&img).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), &img).unwrap();
        expect("is a symbolic link to nothing");
        std::fs::remove_file(&img).unwrap();
        // The same in a data folder: the file with the standard name is named.
        let fifo = d.join("train-images-idx3-ubyte");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let e = data::load_dir(&d).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte: is a FIFO"), "{e}");
        std::fs::remove_file(&fifo).unwrap();
        let e = data::load_dir(&lab).unwrap_err().to_string();
        assert!(e.contains("is a file, not a folder"), "{e}");
    }
    // gzip files are read too; a corrupt gzip stream is named.
    write(&img, &[0x1f, 0x8b, 0, 1, 2]);
    expect("broken gzip");
    // A gzip bomb (2 images promised, 64 MB of zeros packed into 64 KB) is refused
    // after reading one byte past the promise, not expanded into memory.
    {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx_images(2, 4, 4, 0)).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        write(&img, &gz.finish().unwrap());
    }
    expect("the header promises 2 images of 4×4 (32 bytes), the file holds more than 32 bytes");
    // A folder without the standard names.
    let e = data::load_dir(&d).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn a_standard_mnist_folder_loads() {
    let d = scratch("dir");
    let bundled = data::bundled_dir();
    for (from, to) in [
        ("images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
        ("labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ] {
        std::fs::copy(bundled.join(from), d.join(to)).unwrap();
    }
    let split = data::load_dir(&d).unwrap();
    assert_eq!(
        (split.train.len(), split.test.len(), split.train.rows),
        (10_000, 10_000, 28)
    );
    let b = data::bundled().unwrap();
    assert_eq!((b.train.len(), b.test.len()), (8_000, 2_000));
    std::fs::remove_dir_all(d).unwrap();
}
