//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gradlab::optim::{self, Layout, Optimizer, Options, StateDict};
use gradlab::pool::Pool;
use gradlab::Real;

/// Every optimizer with hyperparameters that exercise its branches.
pub const SPECS: &[&str] = &[
    "sgd(lr=0.01)",
    "sgd(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=0.01)",
    "sgd(lr=0.01, momentum=0.9, nesterov=true)",
    "sgdw(lr=0.01, momentum=0.9, weight_decay=0.1)",
    "adagrad(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)",
    "rmsprop(lr=0.01, weight_decay=0.01)",
    "rmsprop(lr=0.01, momentum=0.9, centered=true)",
    "adam(lr=0.01, weight_decay=0.01)",
    "adam(lr=0.01, amsgrad=true, decoupled_weight_decay=true, weight_decay=0.1)",
    "adamw(lr=0.01)",
    "adamax(lr=0.01, weight_decay=0.01)",
    "nadam(lr=0.01, weight_decay=0.01)",
    "nadam(lr=0.01, weight_decay=0.01, decoupled_weight_decay=true)",
    "radam(lr=0.01, weight_decay=0.01)",
    "adadelta(lr=1.0, weight_decay=0.01)",
    "adabound(lr=0.01, final_lr=0.1, weight_decay=0.01)",
    "adabound(lr=0.01, amsbound=true)",
    "lamb(lr=0.01, weight_decay=0.01, debias=true)",
    "lamb(lr=0.01, adam=true)",
    "lars(lr=0.1, momentum=0.9, weight_decay=0.001)",
    "lars(lr=0.1, momentum=0.9, nesterov=true)",
    "lion(lr=0.001, weight_decay=0.1)",
    "swats(lr=0.01)",
    "lookahead(adam(lr=0.01), k=3, alpha=0.5)",
    "lookahead(sgd(lr=0.01, momentum=0.9), k=2, alpha=0.8)",
    "adopt(lr=0.01, weight_decay=0.01)",
    "adopt(lr=0.01, weight_decay=0.1, weight_decouple=true, clip=false)",
    "ademamix(lr=0.01, t_alpha_beta3=20, weight_decay=0.01)",
    "ademamix(lr=0.01, weight_decay=0.1, weight_decouple=true, fixed_decay=true)",
    "rprop(lr=0.01)",
    "asgd(lr=0.01, t0=5, weight_decay=0.01)",
    "sgd_schedulefree(lr=0.05, weight_decay=0.01, warmup_steps=3)",
    "adamw_schedulefree(lr=0.01, warmup_steps=2, weight_decay=0.01, r=0.5)",
    "adafactor(lr=0.01, weight_decay=0.01)",
    "adafactor(lr=0.05, beta2_decay=-0.5, eps=(1e-20, 0.001), d=2)",
    "prodigy(lr=1, weight_decay=0.01)",
    "prodigy(lr=1, betas=(0, 0.99), decouple=false, use_bias_correction=true, growth_rate=2)",
    "muon(lr=0.02, fallback=adamw(lr=0.01))",
    "muon(lr=0.02, nesterov=false, ns_dtype=f32, adjust_lr_fn=match_rms_adamw, fallback=sgd(lr=0.01, momentum=0.9))",
];

/// A small deterministic random generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f64 {
        2.0 * self.next_f64() - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.symmetric()).collect()
    }
}

/// The optimizer `spec` over `layout` without groups (the spec is known to be valid).
pub fn build<T: Real>(spec: &str, layout: &Layout, options: Options) -> Box<dyn Optimizer<T>> {
    optim::build::<T>(spec, layout.clone(), &[], options).unwrap()
}

/// A layout with a matrix, a bias and a scalar.
pub fn small_layout() -> Layout {
    Layout::new([
        ("fc.weight", vec![4, 3]),
        ("fc.bias", vec![4]),
        ("scale", vec![1]),
    ])
    .unwrap()
}

/// Splits a flat buffer into the layout's tensors.
pub fn split<'a, T>(layout: &Layout, flat: &'a mut [T]) -> Vec<&'a mut [T]> {
    layout.split_mut(flat).unwrap()
}

pub fn split_ref<'a, T>(layout: &Layout, flat: &'a [T]) -> Vec<&'a [T]> {
    layout.split(flat).unwrap()
}

/// Converts a state between float types.
pub fn convert<T: Real, U: Real>(s: &StateDict<T>) -> StateDict<U> {
    StateDict {
        meta: s.meta.clone(),
        tensors: s
            .tensors
            .iter()
            .map(|(k, (shape, v))| {
                (
                    k.clone(),
                    (
                        shape.clone(),
                        v.iter().map(|x| U::from_f64(x.to_f64())).collect(),
                    ),
                )
            })
            .collect(),
    }
}

/// Lends one tensor at a time, as the candle bridge does.
pub struct OneAtATime(pub Vec<Vec<f32>>);

// SAFETY: `pointers` keeps its default (false): tensors are lent one at a time.
unsafe impl gradlab::optim::ParamAccess<f32> for OneAtATime {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[f32])) -> gradlab::Result<()> {
        f(&self.0[seg]);
        Ok(())
    }
    fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [f32])) -> gradlab::Result<()> {
        f(&mut self.0[seg]);
        Ok(())
    }
}

/// A plain reference optimizer (tests/reference_steps/, tests/reference_modern/): the state it
/// needs, one f64 step over the flat parameters.
pub trait Reference {
    fn step(&mut self, t: usize, theta: &mut [f64], g: &[f64]);
}

/// Steps `spec`'s fast path (on `threads` threads) and its `reference` `steps` times from the
/// same random start with the same random gradients (drawn from `seed`), asserting after each
/// step that every parameter agrees within `tolerance` relative.
pub fn assert_fast_equals_reference(
    spec: &str,
    reference: &mut dyn Reference,
    layout: &Layout,
    threads: usize,
    seed: u64,
    steps: usize,
    tolerance: f64,
) {
    let pool = Pool::new(threads);
    let shapes: Vec<&[usize]> = layout
        .segments()
        .iter()
        .map(|s| s.shape.as_slice())
        .collect();
    let case = format!("{threads} thread(s), shapes {shapes:?}");
    let n = layout.total();
    let mut rng = Rng(seed | 1);
    let start = rng.vec(n);
    let (mut fast, mut slow) = (start.clone(), start);
    let mut opt: Box<dyn Optimizer<f64>> =
        optim::build::<f64>(spec, layout.clone(), &[], Options::default()).unwrap();
    for t in 1..=steps {
        let g = rng.vec(n);
        pool.install(|| {
            opt.step(&mut split(layout, &mut fast), &split_ref(layout, &g))
                .unwrap()
        });
        reference.step(t, &mut slow, &g);
        for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{spec}, {case}, step {t}, element {i}: fast {a} vs reference {b}"
            );
        }
    }
}
