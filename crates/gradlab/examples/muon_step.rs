//! Milliseconds per Muon step on one weight matrix, e.g.
//! `cargo run --release -p gradlab --example muon_step -- 784 256 4096 4096`
//! (pairs of rows and columns; both Newton–Schulz precisions).

use gradlab::optim::{self, Layout, Options};
use std::time::Instant;

fn main() {
    let dims: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("rows and columns as whole numbers"))
        .collect();
    assert!(
        !dims.is_empty() && dims.len().is_multiple_of(2),
        "give pairs of rows and columns"
    );
    for pair in dims.chunks(2) {
        let (rows, cols) = (pair[0], pair[1]);
        let n = rows * cols;
        let layout = Layout::new([("w", vec![rows, cols])]).unwrap();
        let mut w: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        for dtype in ["bf16", "f32"] {
            let spec = format!("muon(lr=0.02, ns_dtype={dtype})");
            let mut opt =
                optim::build::<f32>(&spec, layout.clone(), &[], Options::default()).unwrap();
            opt.step(&mut [&mut w], &[&g]).unwrap();
            let reps = if n > 4_000_000 { 2 } else { 20 };
            let start = Instant::now();
            for _ in 0..reps {
                opt.step(&mut [&mut w], &[&g]).unwrap();
            }
            let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!(
                "muon {rows}x{cols} ns_dtype={dtype}: {ms:.2} ms per step ({} threads)",
                gradlab::pool::current_threads()
            );
        }
    }
}
