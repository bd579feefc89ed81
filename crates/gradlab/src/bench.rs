//! Measuring optimizer steps against the memory-bandwidth roofline (`gradlab bench`).
//!
//! An optimizer step is memory-bound: its floor is the bytes it must move
//! ([`Optimizer::bytes_per_param`](crate::optim::Optimizer::bytes_per_param)) divided by the memory bandwidth. The roofline is
//! measured in the same process, on the same threads, with the read-modify-write kernel
//! `a[i] += s·b[i]` (12 bytes per f32 element, 24 per f64), in pairs of passes alternating
//! with pairs of steps so that both see the same state of the machine.

use crate::optim::plan::{Plan, Shared};
use crate::optim::{self, Layout, Options};
use crate::pool::Pool;
use crate::{Real, Result};
use std::time::Instant;

/// What a benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Canonical optimizer spec.
    pub optimizer: String,
    /// Parameters.
    pub params: usize,
    /// Tensors they are split into.
    pub tensors: usize,
    /// Element type.
    pub dtype: &'static str,
    /// Threads.
    pub threads: usize,
    /// Median step time.
    pub ms_per_step: f64,
    /// Parameters updated per second.
    pub params_per_second: f64,
    /// Bytes per parameter the algorithm must move.
    pub bytes_per_param: f64,
    /// Those bytes per second.
    pub effective_gbps: f64,
    /// The read-modify-write kernel's bandwidth.
    pub roofline_gbps: f64,
    /// effective / roofline.
    pub fraction_of_roofline: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A layout of `params` elements in `tensors` nearly equal tensors.
pub fn layout(params: usize, tensors: usize) -> Result<Layout> {
    let t = tensors.clamp(1, params.max(1));
    let base = params / t;
    Layout::new((0..t).map(|i| (format!("t{i}"), vec![base + usize::from(i < params % t)])))
}

/// The roofline kernel `a[i] += s·b[i]` over `n` elements of `T` (12 bytes per f32 element).
struct Roofline<T> {
    a: Vec<T>,
    b: Vec<T>,
    plan: Plan,
}

impl<T: Real> Roofline<T> {
    fn new(n: usize) -> Self {
        Roofline {
            a: vec![T::ONE; n],
            b: vec![T::from_f64(1e-3); n],
            plan: Plan::new(&[n]),
        }
    }

    /// Seconds of one pass with the current pool.
    fn time_once(&mut self) -> f64 {
        let s = T::from_f64(0.5);
        let (plan, b) = (&self.plan, &self.b);
        let view = Shared::new(&mut self.a);
        let t0 = Instant::now();
        plan.for_each(|ci| {
            let c = plan.chunks[ci];
            // SAFETY: chunks are disjoint.
            let a = unsafe { view.slice(c.start..c.end) };
            let b = &b[c.start..c.end];
            // Compiled like the kernels, with the widest vector instructions available.
            crate::optim::simd::wide_call(
                #[inline(always)]
                || {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += s * *y;
                    }
                },
            );
        });
        let seconds = t0.elapsed().as_secs_f64();
        std::hint::black_box(&self.a);
        seconds
    }

    fn gbps(&self, seconds: f64) -> f64 {
        (3 * self.a.len() * std::mem::size_of::<T>()) as f64 / seconds / 1e9
    }
}

/// Bandwidth (GB/s) of `a[i] += s·b[i]` over `n` elements of `T` with the current pool.
pub fn roofline<T: Real>(n: usize, repeats: usize) -> f64 {
    let mut kernel = Roofline::<T>::new(n);
    let times: Vec<f64> = (0..repeats + 2)
        .map(|_| kernel.time_once())
        .skip(2)
        .collect();
    kernel.gbps(median(times))
}

/// Times `steps` steps of `spec` on random data (after 2 warm-up rounds) on `threads` threads.
pub fn bench<T: Real>(
    spec: &str,
    params: usize,
    tensors: usize,
    threads: usize,
    steps: usize,
) -> Result<BenchResult> {
    // Parameters, gradients, up to three state buffers and the roofline's two arrays.
    crate::memory::check_fits(
        &format!("benchmarking {params} parameters"),
        (params as u128).checked_mul(7 * std::mem::size_of::<T>() as u128),
    )?;
    let pool = Pool::new(threads.max(1));
    pool.install(|| {
        let layout = layout(params, tensors)?;
        let mut opt = optim::build::<T>(spec, layout.clone(), &[], Options::default())?;
        let mut rng = crate::landscape::Rng::new(1);
        let mut p: Vec<T> = (0..params).map(|_| T::from_f64(rng.normal())).collect();
        let g: Vec<T> = (0..params)
            .map(|_| T::from_f64(1e-3 * rng.normal()))
            .collect();
        let grads = layout.split(&g)?;
        // Steps and roofline passes alternate in pairs, so that both see the same state of a
        // machine whose bandwidth drifts (shared VMs do); only the second of each pair is
        // timed, so that neither pays for writing back the other's data.
        let mut roofline = Roofline::<T>::new(params);
        let (mut times, mut roof_times) = (Vec::new(), Vec::new());
        for k in 0..steps.max(1) + 2 {
            let mut step_seconds = 0.0;
            for _ in 0..2 {
                let mut ps = layout.split_mut(&mut p)?;
                let t0 = Instant::now();
                opt.step(&mut ps, &grads)?;
                step_seconds = t0.elapsed().as_secs_f64();
            }
            roofline.time_once();
            let roof_seconds = roofline.time_once();
            if k >= 2 {
                times.push(step_seconds);
                roof_times.push(roof_seconds);
            }
        }
        let seconds = median(times);
        let roof = roofline.gbps(median(roof_times));
        let bytes = opt.bytes_per_param();
        let effective = bytes * params as f64 / seconds / 1e9;
        Ok(BenchResult {
            optimizer: opt.spec().to_string(),
            params,
            tensors: layout.segments().len(),
            dtype: T::NAME,
            threads: pool.threads(),
            ms_per_step: seconds * 1e3,
            params_per_second: params as f64 / seconds,
            bytes_per_param: bytes,
            effective_gbps: effective,
            roofline_gbps: roof,
            fraction_of_roofline: effective / roof,
        })
    })
}
