//! Measuring optimizer steps against the memory-bandwidth roofline (`gradlab bench`).
//!
//! An optimizer step is memory-bound: its floor is the bytes it must move
//! ([`Optimizer::bytes_per_param`](crate::optim::Optimizer::bytes_per_param)) divided by the memory bandwidth. The roofline is
//! measured in the same process, on the same threads, with the read-modify-write kernel
//! `a[i] += s·b[i]` (12 bytes per f32 element, 24 per f64) run the fastest of several ways
//! (task sizes, one range per thread, ordinary or non-temporal stores, with or without
//! software prefetching as the optimizers' loops do; chosen at the start),
//! over as many bytes as the step touches (parameters, gradients, state: a last-level cache
//! of hundreds of MB holds much of either), in pairs of passes alternating with pairs of steps
//! so that both see the same state of the machine. `bench/peers/roofline.py` checks it
//! against a C/OpenMP build of the same loop.

use crate::optim::{self, prefetch, Layout, Options};
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
    /// How the fastest roofline kernel ran (its split among threads and its stores).
    pub roofline_kernel: String,
    /// Elements of each of the roofline's two arrays (together as many bytes as the step's
    /// parameters, gradients and state).
    pub roofline_elements: usize,
    /// Every timed step, round by round (in ms): with [`bench_together`], round `k` of two
    /// results ran back to back.
    pub step_ms: Vec<f64>,
}

/// The median of timings (the upper one of an even count; `v` must not be empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A layout of `params` elements in `tensors` nearly equal tensors.
pub fn layout(params: usize, tensors: usize) -> Result<Layout> {
    let t = tensors.clamp(1, params.max(1));
    let base = params / t;
    Layout::new((0..t).map(|i| (format!("t{i}"), vec![base + usize::from(i < params % t)])))
}

/// How a roofline pass splits its elements among the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Tasks of this many elements, taken by the threads as they come free.
    Tasks(usize),
    /// One contiguous range per thread (OpenMP's static schedule).
    PerThread,
}

/// How a roofline pass writes `a` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stores {
    /// Ordinary stores (the line stays in the cache).
    Cached,
    /// Non-temporal stores, a cache line at a time (x86-64).
    Streaming,
}

/// One way of running the read-modify-write kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    split: Split,
    stores: Stores,
    /// Requests the lines [`prefetch::AHEAD`] elements on, as the optimizers' loops do.
    prefetch: bool,
}

impl Variant {
    /// Every variant tried: the optimizers' own chunking, larger tasks, one range per thread,
    /// each with ordinary and with non-temporal stores, each with and without software
    /// prefetching.
    fn all() -> Vec<Variant> {
        let splits = [
            Split::Tasks(optim::plan::CHUNK),
            Split::Tasks(16 * optim::plan::CHUNK),
            Split::PerThread,
        ];
        let stores: &[Stores] = if cfg!(target_arch = "x86_64") {
            &[Stores::Cached, Stores::Streaming]
        } else {
            &[Stores::Cached]
        };
        splits
            .iter()
            .flat_map(|&split| stores.iter().map(move |&stores| (split, stores)))
            .flat_map(|(split, stores)| {
                [false, true].map(|prefetch| Variant {
                    split,
                    stores,
                    prefetch,
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        let split = match self.split {
            Split::Tasks(n) => format!("tasks of {n} elements"),
            Split::PerThread => "one range per thread".to_string(),
        };
        let stores = match self.stores {
            Stores::Cached => "cached stores",
            Stores::Streaming => "non-temporal stores",
        };
        let prefetch = if self.prefetch { ", prefetching" } else { "" };
        format!("{split}, {stores}{prefetch}")
    }
}

/// The roofline kernel `a[i] += s·b[i]` over `n` elements of `T` (12 bytes per f32 element),
/// run the fastest of several ways ([`Variant::all`]): the roofline is the best this machine
/// does on the simplest read-modify-write, so a fraction of it means what it says.
struct Roofline<T> {
    a: Vec<T>,
    b: Vec<T>,
    variant: Variant,
}

impl<T: Real> Roofline<T> {
    /// The arrays, and the fastest variant (median of 3 passes each, after one warm-up).
    fn new(n: usize) -> Self {
        let mut roofline = Roofline {
            a: vec![T::ONE; n],
            b: vec![T::from_f64(1e-3); n],
            variant: Variant {
                split: Split::PerThread,
                stores: Stores::Cached,
                prefetch: false,
            },
        };
        let mut best = (f64::INFINITY, roofline.variant);
        for variant in Variant::all() {
            roofline.variant = variant;
            let times: Vec<f64> = (0..4).map(|_| roofline.time_once()).skip(1).collect();
            let t = median(times);
            if t < best.0 {
                best = (t, variant);
            }
        }
        roofline.variant = best.1;
        roofline
    }

    /// Seconds of one pass with the current pool.
    fn time_once(&mut self) -> f64 {
        let s = T::from_f64(0.5);
        let b = &self.b;
        let n = self.a.len();
        let chunk = match self.variant.split {
            Split::Tasks(len) => len,
            Split::PerThread => n.div_ceil(crate::pool::current_threads().max(1)),
        };
        let (stores, prefetch) = (self.variant.stores, self.variant.prefetch);
        let t0 = Instant::now();
        crate::pool::for_each_chunk(&mut self.a, chunk, |i, a| {
            let b = &b[i * chunk..i * chunk + a.len()];
            match stores {
                Stores::Cached if prefetch => crate::optim::simd::wide_call(
                    #[inline(always)]
                    || {
                        let whole = prefetch::whole_blocks(a.len());
                        for start in (0..whole).step_by(prefetch::BLOCK) {
                            for at in prefetch::ahead::<T>(start) {
                                prefetch::line(a.as_ptr(), at);
                                prefetch::line(b.as_ptr(), at);
                            }
                            for i in start..start + prefetch::BLOCK {
                                a[i] += s * b[i];
                            }
                        }
                        for i in whole..a.len() {
                            a[i] += s * b[i];
                        }
                    },
                ),
                Stores::Cached => crate::optim::simd::wide_call(
                    #[inline(always)]
                    || {
                        for (x, y) in a.iter_mut().zip(b) {
                            *x += s * *y;
                        }
                    },
                ),
                Stores::Streaming => streaming_axpy(a, b, s, prefetch),
            }
        });
        let seconds = t0.elapsed().as_secs_f64();
        std::hint::black_box(&self.a);
        seconds
    }

    fn gbps(&self, seconds: f64) -> f64 {
        (3 * self.a.len() * std::mem::size_of::<T>()) as f64 / seconds / 1e9
    }
}

/// `a[i] += s·b[i]` writing whole cache lines of `a` with non-temporal stores (ordinary
/// stores for the unaligned head and the tail), requesting the lines [`prefetch::AHEAD`]
/// elements on with `prefetch`.
fn streaming_axpy<T: Real>(a: &mut [T], b: &[T], s: T, prefetch: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        const LINE: usize = 64;
        let per_line = LINE / std::mem::size_of::<T>();
        let head = (a.as_ptr().align_offset(LINE)).min(a.len());
        for (x, y) in a[..head].iter_mut().zip(&b[..head]) {
            *x += s * *y;
        }
        let (a_body, b_body) = (&mut a[head..], &b[head..]);
        let lines = a_body.len() / per_line;
        crate::optim::simd::wide_call(
            #[inline(always)]
            || {
                let mut line = [T::ZERO; 16];
                for k in 0..lines {
                    let at = k * per_line;
                    if prefetch {
                        prefetch::line(a_body.as_ptr(), at + prefetch::AHEAD);
                        prefetch::line(b_body.as_ptr(), at + prefetch::AHEAD);
                    }
                    let (x, y) = (&a_body[at..at + per_line], &b_body[at..at + per_line]);
                    for ((out, &x), &y) in line.iter_mut().zip(x).zip(y) {
                        *out = x + s * y;
                    }
                    let dst = a_body[at..at + per_line].as_mut_ptr() as *mut __m128i;
                    let src = line.as_ptr() as *const __m128i;
                    for q in 0..4 {
                        // SAFETY: `dst` is 64-byte aligned (the head was skipped) and points to
                        // a whole line inside `a_body`; `src` holds 64 bytes of `line`.
                        unsafe { _mm_stream_si128(dst.add(q), _mm_loadu_si128(src.add(q))) };
                    }
                }
            },
        );
        // SAFETY: a store fence has no preconditions; it orders the streaming stores before
        // the pass is timed as finished.
        unsafe { _mm_sfence() };
        let done = head + lines * per_line;
        for (x, y) in a[done..].iter_mut().zip(&b[done..]) {
            *x += s * *y;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = prefetch;
        for (x, y) in a.iter_mut().zip(b) {
            *x += s * *y;
        }
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
    let mut results = bench_together::<T>(&[spec], params, tensors, threads, steps)?;
    Ok(results.remove(0))
}

/// One optimizer under test: its state, parameters, roofline and timings.
struct Contestant<T: Real> {
    opt: Box<dyn optim::Optimizer<T>>,
    params: Vec<T>,
    roofline: Roofline<T>,
    times: Vec<f64>,
    roof_times: Vec<f64>,
}

/// [`bench()`] for several optimizers in one run: round by round, each takes its pair of steps
/// and its pair of roofline passes in turn, so that a machine whose bandwidth drifts (shared
/// VMs do) affects them alike, and the ratio of their times in one round is a same-run
/// ratio ([`BenchResult::step_ms`]). Every optimizer steps its own copy of the parameters
/// with the same gradients.
pub fn bench_together<T: Real>(
    specs: &[&str],
    params: usize,
    tensors: usize,
    threads: usize,
    steps: usize,
) -> Result<Vec<BenchResult>> {
    // Per optimizer: parameters, up to three state buffers, and the roofline's two arrays as
    // large as those with the gradients; the gradients once.
    crate::memory::check_fits(
        &format!("benchmarking {params} parameters"),
        (params as u128)
            .checked_mul((1 + 9 * specs.len() as u128) * std::mem::size_of::<T>() as u128),
    )?;
    let pool = Pool::new(threads.max(1));
    pool.install(|| {
        let layout = layout(params, tensors)?;
        let mut rng = crate::landscape::Rng::new(1);
        let start: Vec<T> = (0..params).map(|_| T::from_f64(rng.normal())).collect();
        let g: Vec<T> = (0..params)
            .map(|_| T::from_f64(1e-3 * rng.normal()))
            .collect();
        let grads = layout.split(&g)?;
        let mut contestants = Vec::with_capacity(specs.len());
        for spec in specs {
            let opt = optim::build::<T>(spec, layout.clone(), &[], Options::default())?;
            // The roofline streams over as many bytes as the step touches, so that caches (a
            // large last-level cache holds much of a 16M-parameter step) favour neither.
            let touched = opt.state_bytes() + 2 * params * std::mem::size_of::<T>();
            let roofline = Roofline::<T>::new((touched / (2 * std::mem::size_of::<T>())).max(1));
            contestants.push(Contestant {
                opt,
                params: start.clone(),
                roofline,
                times: Vec::new(),
                roof_times: Vec::new(),
            });
        }
        drop(start);
        // Steps and roofline passes alternate in pairs, so that both see the same state of
        // the machine; only the second of each pair is timed, so that neither pays for
        // writing back the other's data.
        for k in 0..steps.max(1) + 2 {
            for c in contestants.iter_mut() {
                let mut step_seconds = 0.0;
                for _ in 0..2 {
                    let mut ps = layout.split_mut(&mut c.params)?;
                    let t0 = Instant::now();
                    c.opt.step(&mut ps, &grads)?;
                    step_seconds = t0.elapsed().as_secs_f64();
                }
                c.roofline.time_once();
                let roof_seconds = c.roofline.time_once();
                if k >= 2 {
                    c.times.push(step_seconds);
                    c.roof_times.push(roof_seconds);
                }
            }
        }
        Ok(contestants
            .into_iter()
            .map(|c| {
                let seconds = median(c.times.clone());
                let roof = c.roofline.gbps(median(c.roof_times));
                let bytes = c.opt.bytes_per_param();
                let effective = bytes * params as f64 / seconds / 1e9;
                BenchResult {
                    optimizer: c.opt.spec().to_string(),
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
                    roofline_kernel: c.roofline.variant.describe(),
                    roofline_elements: c.roofline.a.len(),
                    step_ms: c.times.iter().map(|t| t * 1e3).collect(),
                }
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The non-temporal variant computes what the plain loop does, whatever the alignment
    /// of the slices and their tails.
    #[test]
    fn streaming_stores_compute_the_same_sums() {
        for (offset, len) in [(0, 0), (1, 5), (3, 1000), (0, 64), (7, 4099)] {
            let b: Vec<f32> = (0..len + offset).map(|i| (i as f32).sin()).collect();
            let plain: Vec<f32> = (0..len + offset).map(|i| (i as f32).cos()).collect();
            for prefetch in [false, true] {
                let mut plain = plain.clone();
                let mut streamed = plain.clone();
                streaming_axpy(&mut streamed[offset..], &b[offset..], 0.5, prefetch);
                for (x, y) in plain[offset..].iter_mut().zip(&b[offset..]) {
                    *x += 0.5 * *y;
                }
                assert_eq!(plain, streamed, "offset {offset}, len {len}");
                let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                let mut a64: Vec<f64> = plain.iter().map(|&x| x as f64).collect();
                let expected: Vec<f64> = a64.iter().zip(&b64).map(|(x, y)| x + 0.25 * y).collect();
                streaming_axpy(&mut a64, &b64, 0.25, prefetch);
                assert_eq!(a64, expected);
            }
        }
    }

    /// Every way of running the roofline kernel computes `a[i] += s·b[i]` over every element
    /// (lengths that leave a partial task, block and cache line).
    #[test]
    fn every_roofline_variant_computes_the_kernel() {
        let variants = Variant::all();
        assert_eq!(
            variants.len(),
            if cfg!(target_arch = "x86_64") { 12 } else { 6 }
        );
        for n in [1, prefetch::BLOCK + 3, optim::plan::CHUNK + 77] {
            for &variant in &variants {
                let mut roofline = Roofline::<f64> {
                    a: vec![1.0; n],
                    b: (0..n).map(|i| i as f64).collect(),
                    variant,
                };
                roofline.time_once();
                let wrong = (0..n).find(|&i| roofline.a[i] != 1.0 + 0.5 * i as f64);
                assert_eq!(wrong, None, "n = {n}, {}", variant.describe());
            }
        }
    }

    /// Optimizers timed together take their steps round by round, each over its own bytes.
    #[test]
    fn optimizers_timed_together_alternate_round_by_round() {
        let r =
            bench_together::<f32>(&["lion", "adam(state_dtype=bf16)"], 40_000, 2, 1, 3).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0].optimizer.starts_with("lion(") && r[1].optimizer.contains("bf16"));
        for one in &r {
            assert_eq!(one.step_ms.len(), 3);
            assert!(one.step_ms.iter().all(|&t| t > 0.0));
            assert!(one.step_ms.contains(&one.ms_per_step));
        }
        // 12 bytes per parameter each: Lion's f32 momentum, or Adam's two bf16 moments,
        // besides the parameters and gradients.
        assert_eq!(r[0].roofline_elements, 40_000 * 12 / 8);
        assert_eq!(r[1].roofline_elements, 40_000 * 12 / 8);
        assert!(bench_together::<f32>(&["adam", "adam(lr=-1)"], 10, 1, 1, 1).is_err());
    }

    /// The roofline covers the bytes the step touches and names the variant it ran.
    #[test]
    fn the_roofline_streams_over_the_steps_bytes() {
        let r = bench::<f32>("adam", 100_000, 3, 2, 2).unwrap();
        // Parameters and gradients (2 × 4 bytes) and Adam's two moments (2 × 4 bytes).
        assert_eq!(r.roofline_elements, 100_000 * 16 / 8);
        let names: Vec<String> = Variant::all().iter().map(Variant::describe).collect();
        assert!(names.contains(&r.roofline_kernel), "{}", r.roofline_kernel);
        assert!(r.roofline_gbps > 0.0 && r.fraction_of_roofline > 0.0);
        let bf16 = bench::<f32>("adam(state_dtype=bf16)", 100_000, 1, 1, 2).unwrap();
        assert_eq!(bf16.roofline_elements, 100_000 * 12 / 8);
    }
}
