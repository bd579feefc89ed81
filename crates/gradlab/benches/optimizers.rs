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
                    let mut rest = p.as_mut_slice();
                    let mut ps: Vec<&mut [f32]> = Vec::with_capacity(l.segments().len());
                    for s in l.segments() {
                        let (head, tail) = rest.split_at_mut(s.len);
                        ps.push(head);
                        rest = tail;
                    }
                    let gs: Vec<&[f32]> = l
                        .segments()
                        .iter()
                        .map(|s| &g[s.offset..s.offset + s.len])
                        .collect();
                    opt.step(&mut ps, &gs).expect("a step")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
