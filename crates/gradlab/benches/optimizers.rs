//! Criterion benchmarks of optimizer steps (`cargo bench -p gradlab`): 4M f32 parameters as
//! one tensor and as 1,000 tensors. `gradlab bench` reports the same steps against the
//! memory-bandwidth roofline.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gradlab::bench::layout;
use gradlab::optim::{self, Options};

fn steps(c: &mut Criterion) {
    let n = 4_000_000;
    let mut group = c.benchmark_group("step");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    for spec in [
        "adam",
        "adamw",
        "sgd(momentum=0.9)",
        "rmsprop",
        "lion",
        "lamb",
    ] {
        for tensors in [1, 1000] {
            let l = layout(n, tensors).expect("a layout");
            let mut opt = optim::build::<f32>(spec, l.clone(), &[], Options::default())
                .expect("a valid spec");
            let mut p = vec![0.5f32; n];
            let g = vec![1e-3f32; n];
            group.bench_with_input(BenchmarkId::new(spec, tensors), &tensors, |b, _| {
                b.iter(|| {
                    let mut ps = l.split_mut(&mut p).expect("sizes match");
                    let gs = l.split(&g).expect("sizes match");
                    opt.step(&mut ps, &gs).expect("a step")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
