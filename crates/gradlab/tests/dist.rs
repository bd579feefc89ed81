//! ZeRO-1 sharding: an optimizer split over ranks (threads here, MPI in the binary) is the
//! same algorithm as one process, and its state merges back and re-shards to any rank count.

mod common;

use common::*;
use gradlab::dist::{self, Collective, Distributed, Shard, ThreadGroup};
use gradlab::optim::{self, Layout, NonFinitePolicy, Optimizer, Options, StateDict};
use std::sync::Arc;

/// Tensors of several sizes, one larger than a chunk, so shard boundaries cut through them.
fn layout() -> Layout {
    Layout::new([
        ("a.weight", vec![7, 5]),
        ("a.bias", vec![7]),
        ("big", vec![20_000]),
        ("c", vec![1]),
        ("d.weight", vec![3, 11]),
    ])
    .unwrap()
}

/// The gradient of a quadratic bowl plus a step-dependent term; `Some(i)` poisons element i.
fn gradient(params: &[f64], step: usize, poison: Option<usize>) -> Vec<f64> {
    let mut g: Vec<f64> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (1.0 + (i % 13) as f64 * 0.3) * (p - 0.1) + ((i * 7 + step) % 5) as f64 * 0.01
        })
        .collect();
    if let Some(i) = poison {
        g[i] = f64::NAN;
    }
    g
}

fn initial(n: usize) -> Vec<f64> {
    Rng(9).vec(n)
}

fn single(spec: &str, options: &Options, steps: usize) -> (Vec<f64>, StateDict<f64>) {
    let full = layout();
    let mut opt = optim::build::<f64>(spec, full.clone(), &[], options.clone()).unwrap();
    let mut p = initial(full.total());
    for step in 0..steps {
        let g = gradient(&p, step, None);
        opt.step_flat(&mut p, &g).unwrap();
    }
    (p, opt.state_dict())
}

/// One rank's optimizer over its shard.
fn shard_optimizer(
    spec: &str,
    options: &Options,
    group: Arc<dyn Collective>,
) -> (Shard, Box<dyn Optimizer<f64>>) {
    let full = layout();
    let shard = Shard::new(full.total(), group.rank(), group.size());
    let options = Options {
        distributed: Some(Distributed::new(group, &full, &shard)),
        ..options.clone()
    };
    let opt = optim::build::<f64>(spec, shard.layout(&full), &[], options).unwrap();
    (shard, opt)
}

/// Runs `steps` sharded steps on `ranks` threads from `start` (params and an optional full
/// state); every rank computes the gradient of its shard (the reduce-scatter is tested with
/// the collectives), then the shards are gathered. Returns the parameters and the merged
/// state, or the first rank's error.
fn sharded(
    spec: &str,
    options: &Options,
    ranks: usize,
    start: (Vec<f64>, Option<StateDict<f64>>),
    steps: std::ops::Range<usize>,
    poison: Option<(usize, usize)>,
) -> Result<(Vec<f64>, StateDict<f64>), String> {
    let full = layout();
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(ranks)
            .into_iter()
            .map(|g| {
                let (params, state) = (&start.0, &start.1);
                let full = &full;
                let steps = steps.clone();
                s.spawn(move || {
                    let (shard, mut opt) = shard_optimizer(spec, options, Arc::new(g));
                    if let Some(state) = state {
                        opt.load_state_dict(&dist::shard_state(state, full, &shard).unwrap())
                            .unwrap();
                    }
                    let mut p = params.clone();
                    for step in steps {
                        let bad = poison.filter(|(at, _)| *at == step).map(|(_, i)| i);
                        let g = gradient(&p, step, bad);
                        let r = shard.range.clone();
                        if let Err(e) = opt.step_flat(&mut p[r.clone()], &g[r]) {
                            return Err(e.to_string());
                        }
                    }
                    Ok((shard.range.clone(), p, opt.state_dict()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut params = start.0.clone();
    let mut parts = Vec::new();
    for out in outputs {
        let (range, p, state) = out?;
        params[range.clone()].copy_from_slice(&p[range]);
        parts.push(state);
    }
    Ok((params, dist::merge_shards(&full, parts).unwrap()))
}

fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what} element {i}: sharded {x} vs single {y}"
        );
    }
}

fn assert_states_close(what: &str, a: &StateDict<f64>, b: &StateDict<f64>) {
    assert_eq!(a.meta.step, b.meta.step, "{what}: step");
    assert_eq!(a.meta.optimizer, b.meta.optimizer, "{what}: optimizer");
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>(),
        "{what}: state tensors"
    );
    for (key, (shape, values)) in &b.tensors {
        assert_eq!(&a.tensors[key].0, shape, "{what} {key}: shape");
        assert_close(&format!("{what} {key}"), &a.tensors[key].1, values, 1e-10);
    }
    for (tensor, scalars) in &b.meta.scalars {
        for (k, v) in scalars {
            let got = a.meta.scalars[tensor][k];
            assert!(
                (got - v).abs() <= 1e-10 * (1.0 + v.abs()),
                "{what} {tensor}.{k}: {got} vs {v}"
            );
        }
    }
}

/// The test gradient of an element depends on that element only, so a rank's shard of
/// parameters evolves exactly as in one process exactly when the shared sums agree (the
/// all-gather of the trainer is not needed here).
#[test]
fn every_optimizer_sharded_equals_one_process() {
    let clipped = Options {
        clip_norm: Some(5.0),
        ..Options::default()
    };
    let plain = Options::default();
    let cases: Vec<(&str, &Options)> = SPECS
        .iter()
        .map(|s| (*s, &clipped))
        .chain([
            ("lamb(lr=0.01)", &plain),
            ("adamw(lr=0.01, state_dtype=bf16)", &plain),
        ])
        .collect();
    for (spec, options) in cases {
        let n = layout().total();
        let (p1, s1) = single(spec, options, 12);
        for ranks in [2, 3, 5] {
            let (p, s) = sharded(spec, options, ranks, (initial(n), None), 0..12, None).unwrap();
            let what = format!("{spec} on {ranks} ranks");
            assert_close(&what, &p, &p1, 1e-10);
            assert_states_close(&what, &s, &s1);
        }
    }
}

#[test]
fn state_reshards_between_rank_counts() {
    let n = layout().total();
    for spec in [
        "adamw(lr=0.01)",
        "lamb(lr=0.01)",
        "swats(lr=0.01)",
        "lookahead(adam(lr=0.01), k=3)",
        "muon(lr=0.02, fallback=adamw(lr=0.01))",
        "prodigy(lr=1)",
        "adafactor(lr=0.05)",
    ] {
        let options = Options::default();
        let (p_ref, s_ref) = single(spec, &options, 10);
        // 2 ranks for 6 steps, then 3 ranks, then 1 process.
        let (p, s) = sharded(spec, &options, 2, (initial(n), None), 0..6, None).unwrap();
        let (p, s) = sharded(spec, &options, 3, (p, Some(s)), 6..8, None).unwrap();
        let mut opt = optim::build::<f64>(spec, layout(), &[], options.clone()).unwrap();
        opt.load_state_dict(&s).unwrap();
        let mut p = p;
        for step in 8..10 {
            let g = gradient(&p, step, None);
            opt.step_flat(&mut p, &g).unwrap();
        }
        assert_close(&format!("{spec} 2 -> 3 -> 1 ranks"), &p, &p_ref, 1e-10);
        assert_states_close(spec, &opt.state_dict(), &s_ref);
        // And a single process's state onto 2 ranks.
        let (p1, s1) = single(spec, &options, 5);
        let (p, _) = sharded(spec, &options, 2, (p1, Some(s1)), 5..10, None).unwrap();
        assert_close(&format!("{spec} 1 -> 2 ranks"), &p, &p_ref, 1e-10);
    }
}

#[test]
fn shards_hold_their_share_of_the_state() {
    let full = layout();
    let results: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(2)
            .into_iter()
            .map(|g| {
                s.spawn(move || {
                    let (_, opt) =
                        shard_optimizer("adam(lr=0.01)", &Options::default(), Arc::new(g));
                    opt.state_dict()
                        .tensors
                        .values()
                        .map(|(_, v)| v.len())
                        .sum()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Two moments per parameter, split evenly.
    assert_eq!(results, [full.total(), full.total()]);
}

#[test]
fn non_finite_gradients_are_named_on_every_rank() {
    let n = layout().total();
    let bad = 35 + 7 + 12_345; // element 12,345 of "big": on the second of 2 ranks.
    let err = sharded(
        "adam(lr=0.01)",
        &Options::default(),
        2,
        (initial(n), None),
        0..4,
        Some((2, bad)),
    )
    .unwrap_err();
    assert!(
        err.contains("step 3") && err.contains("'big'") && err.contains("12345"),
        "{err}"
    );
    let skip = Options {
        nonfinite: NonFinitePolicy::Skip,
        ..Options::default()
    };
    let (p, s) = sharded(
        "adam(lr=0.01)",
        &skip,
        2,
        (initial(n), None),
        0..4,
        Some((2, bad)),
    )
    .unwrap();
    // Every rank skipped step 3: three steps taken, the same as one process that skips it.
    assert_eq!(s.meta.step, 3);
    let mut opt = optim::build::<f64>("adam(lr=0.01)", layout(), &[], skip).unwrap();
    let mut q = initial(n);
    for step in 0..4 {
        let g = gradient(&q, step, (step == 2).then_some(bad));
        opt.step_flat(&mut q, &g).unwrap();
    }
    assert_close("skip", &p, &q, 1e-12);
}

/// Muon gathers whole matrices, Adafactor adds up whole tensors' row and column sums: ranks
/// that hold only pieces of a matrix (rows cut part-way), or none, or no tensor of the
/// fallback, still take part in every exchange, and parameter groups apply on every rank
/// (whether or not its shard holds a tensor they name).
#[test]
fn muon_prodigy_and_adafactor_sharded_with_groups_equal_one_process() {
    let full = Layout::new([
        ("w1", vec![60, 70]),
        ("conv", vec![3, 4, 5, 7]),
        ("w2", vec![9, 40]),
        ("norm.scale", vec![40]),
        ("bias", vec![9]),
    ])
    .unwrap();
    let n = full.total();
    let groups = [optim::ParamGroup::parse(&["bias"], "weight_decay=0").unwrap()];
    for spec in [
        "muon(lr=0.02, fallback=adamw(lr=0.01, weight_decay=0.1))",
        "muon(lr=0.02, nesterov=false, ns_dtype=f32, fallback=lamb(lr=0.01))",
        "prodigy(lr=1, weight_decay=0.01)",
        "adafactor(lr=0.05, weight_decay=0.01)",
        "adafactor(lr=0.05, state_dtype=bf16)",
    ] {
        let run = |opt: &mut dyn Optimizer<f64>, p: &mut [f64], range: std::ops::Range<usize>| {
            for step in 0..6 {
                let g: Vec<f64> = (0..n)
                    .map(|i| ((i * 31 + step * 7) % 17) as f64 * 0.1 - 0.8)
                    .collect();
                opt.step_flat(&mut p[range.clone()], &g[range.clone()])
                    .unwrap();
            }
        };
        let mut single =
            optim::build::<f64>(spec, full.clone(), &groups, Options::default()).unwrap();
        let mut want = initial(n);
        run(single.as_mut(), &mut want, 0..n);
        for ranks in [2, 3, 7] {
            let parts: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = ThreadGroup::new(ranks)
                    .into_iter()
                    .map(|g| {
                        let (full, groups) = (&full, &groups);
                        s.spawn(move || {
                            let shard = Shard::new(n, g.rank(), g.size());
                            let options = Options {
                                distributed: Some(Distributed::new(Arc::new(g), full, &shard)),
                                ..Options::default()
                            };
                            let mut opt =
                                optim::build::<f64>(spec, shard.layout(full), groups, options)
                                    .unwrap();
                            let mut p = initial(n);
                            run(opt.as_mut(), &mut p, shard.range.clone());
                            (shard.range.clone(), p, opt.state_dict())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut got = initial(n);
            let mut states = Vec::new();
            for (range, p, state) in parts {
                got[range.clone()].copy_from_slice(&p[range]);
                states.push(state);
            }
            let what = format!("{spec} on {ranks} ranks");
            assert_close(&what, &got, &want, 1e-10);
            let merged = dist::merge_shards(&full, states).unwrap();
            assert_states_close(&what, &merged, &single.state_dict());
        }
    }
}
