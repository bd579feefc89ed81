//! The generic engine that runs any [`Rule`] over a layout: argument checks, the gradient
//! pass (non-finite detection, global norm, clipping), the fused update passes over chunks
//! on the thread pool, and state save/restore.

use super::compact;
use super::plan::{Plan, Shared};
use super::rule::{CompactSlots, Grad, Rule, Scalars, Slots, Sums, LANES};
use super::state::{state_error, StateDict, StateMeta, STATE_VERSION};
use super::{NonFinitePolicy, Optimizer, Options, ParamAccess, StepOutcome};
use crate::dist::ShardSync;
use crate::optim::layout::Layout;
use crate::spec::{Args, Spec, Value};
use crate::{Error, Real, Result};
use std::collections::BTreeMap;

/// The state scalar that records whether the parameters hold the evaluation point.
const EVAL_MODE: &str = "eval_mode";

/// Blocks of [`LANES`] squares summed in the gradients' type before going into the f64 lanes.
const SQUARE_GROUP: usize = 64;

/// One optimizer: a rule, its group configurations and its state over a layout.
pub struct Engine<T: Real, R: Rule> {
    layout: Layout,
    configs: Vec<R::Config>,
    seg_group: Vec<usize>,
    options: Options,
    plan: Plan,
    slot_names: Vec<&'static str>,
    slots: Vec<Vec<T>>,
    /// The element buffers in bfloat16 (`state_dtype=bf16`; `slots` is then empty).
    compact: Vec<Vec<u16>>,
    scalars: Vec<Scalars>,
    coefs: Vec<R::Coef>,
    partials: Vec<Sums>,
    squares: Vec<f64>,
    failed: Option<String>,
    /// Tensors without a gradient in the step under way (see
    /// [`Optimizer::step_with_absent`]); all false otherwise.
    absent: Vec<bool>,
    seg_sums: Vec<Sums>,
    param_ptrs: Vec<(usize, usize)>,
    step: u64,
    sync: Option<ShardSync>,
    /// Whether the parameters hold the evaluation point ([`Rule::EVAL_POINT`] rules).
    eval: bool,
}

impl<T: Real, R: Rule> Engine<T, R> {
    /// Builds the engine: `configs[0]` is the base group; `seg_group[i]` picks segment i's.
    pub fn new(
        layout: Layout,
        configs: Vec<R::Config>,
        seg_group: Vec<usize>,
        options: Options,
    ) -> Self {
        let lens: Vec<usize> = layout.segments().iter().map(|s| s.len).collect();
        let plan = Plan::new(&lens);
        let slot_names = R::slots(&configs);
        let total = layout.total();
        let slots = (0..slot_names.len())
            .map(|k| {
                let mut buf = vec![T::ZERO; total];
                for (seg, &g) in layout.segments().iter().zip(&seg_group) {
                    let init = T::from_f64(R::slot_init(&configs[g], k));
                    buf[seg.offset..seg.offset + seg.len].fill(init);
                }
                buf
            })
            .collect();
        let n = layout.segments().len();
        let sync = options
            .distributed
            .as_ref()
            .map(|d| ShardSync::new(d, &layout));
        let scalars = seg_group
            .iter()
            .map(|&g| R::scalars_init(&configs[g]))
            .collect();
        Engine {
            configs,
            options,
            slot_names,
            slots,
            compact: Vec::new(),
            scalars,
            coefs: vec![R::Coef::default(); n],
            partials: vec![[0.0; 4]; plan.chunks.len()],
            squares: vec![0.0; plan.chunks.len()],
            failed: None,
            absent: vec![false; layout.segments().len()],
            seg_sums: vec![[0.0; 4]; n],
            param_ptrs: vec![(0, 0); n],
            plan,
            seg_group,
            layout,
            step: 0,
            sync,
            eval: false,
        }
    }

    /// Parses a spec (and group overrides) into an engine.
    pub fn from_spec(
        spec: &Spec,
        layout: Layout,
        groups: &[super::ParamGroup],
        options: Options,
    ) -> Result<Self> {
        let (base, compact) = parse_config::<R>(spec)?;
        let mut configs = vec![base];
        for group in groups {
            let merged = group.apply(spec);
            let (config, group_compact) = parse_config::<R>(&merged)?;
            if group_compact != compact {
                return Err(Args::new(&merged, 0).invalid(
                    "state_dtype",
                    "is set for the whole optimizer, not per parameter group",
                ));
            }
            configs.push(config);
        }
        let seg_group = super::assign_groups(&layout, groups, &options)?;
        let engine = Self::new(layout, configs, seg_group, options);
        Ok(if compact {
            engine.with_bf16_state()
        } else {
            engine
        })
    }

    /// Stores the element buffers in bfloat16 (see [`compact`]).
    fn with_bf16_state(mut self) -> Self {
        self.compact = self
            .slots
            .iter()
            .map(|buf| {
                buf.iter()
                    .map(|x| compact::to_bf16_nearest(x.to_f32()))
                    .collect()
            })
            .collect();
        self.slots = Vec::new();
        self
    }

    /// Values `range` of element buffer `slot`, whatever it is stored in.
    fn slot_values(&self, slot: usize, range: std::ops::Range<usize>) -> Vec<T> {
        match self.compact.get(slot) {
            Some(bits) => bits[range]
                .iter()
                .map(|&b| T::from_f32(compact::from_bf16(b)))
                .collect(),
            None => self.slots[slot][range].to_vec(),
        }
    }

    /// Sets values `range` of element buffer `slot` (rounded to nearest in bfloat16).
    fn set_slot_values(&mut self, slot: usize, range: std::ops::Range<usize>, values: &[T]) {
        match self.compact.get_mut(slot) {
            Some(bits) => {
                for (b, x) in bits[range].iter_mut().zip(values) {
                    *b = compact::to_bf16_nearest(x.to_f32());
                }
            }
            None => self.slots[slot][range].copy_from_slice(values),
        }
    }

    /// Moves the parameters to the evaluation point or back (see [`Rule::swap_point`]).
    fn swap_point(&mut self, params: &mut dyn ParamAccess<T>, to_eval: bool) -> Result<()> {
        if !R::EVAL_POINT || self.eval == to_eval {
            return Ok(());
        }
        if params.count() != self.layout.segments().len() {
            return Err(Error::Layout(format!(
                "{}: expected {} parameter tensors, got {}",
                self.name(),
                self.layout.segments().len(),
                params.count()
            )));
        }
        for (i, seg) in self.layout.segments().iter().enumerate() {
            if self.scalars[i][0] == 0.0 {
                continue; // no step yet: both points are the initial weights
            }
            let range = seg.offset..seg.offset + seg.len;
            let slots: Vec<Vec<T>> = (0..self.slot_names.len())
                .map(|k| self.slot_values(k, range.clone()))
                .collect();
            let cfg = &self.configs[self.seg_group[i]];
            let mut wrong_len = None;
            params.update(i, &mut |p: &mut [T]| {
                if p.len() == seg.len {
                    R::swap_point(cfg, p, &slots, to_eval);
                } else {
                    wrong_len = Some(p.len());
                }
            })?;
            if let Some(len) = wrong_len {
                return Err(Error::Layout(format!(
                    "{}: tensor '{}' has {len} elements, expected {}",
                    self.name(),
                    seg.name,
                    seg.len
                )));
            }
        }
        self.eval = to_eval;
        Ok(())
    }

    /// The spec of one group, with `state_dtype` when it is not the default.
    fn spec_of(&self, cfg: &R::Config) -> Spec {
        let spec = R::to_spec(cfg);
        if self.compact.is_empty() {
            spec
        } else {
            spec.with("state_dtype", Value::Word("bf16".into()))
        }
    }

    /// Sum of squares of every gradient chunk and its first non-finite element (the
    /// separate pass before the update; see [`square_sum`]).
    fn gradient_pass(&mut self, grads: &[&[T]]) -> (f64, Option<(usize, usize, f64)>) {
        let chunks = &self.plan.chunks;
        let squares = Shared::new(&mut self.squares);
        let absent = &self.absent;
        self.plan.for_each(|ci| {
            let c = chunks[ci];
            let sum = if absent[c.seg] {
                0.0
            } else {
                let g = &grads[c.seg][c.start..c.end];
                super::simd::wide_call(
                    #[inline(always)]
                    || square_sum(g),
                )
            };
            // SAFETY: chunk `ci` is written by this call only.
            unsafe { squares.slice(ci..ci + 1)[0] = sum };
        });
        let total = self.squares.iter().sum::<f64>();
        if total.is_finite() {
            return (total, None);
        }
        match self.first_non_finite(grads) {
            Some(bad) => (f64::NAN, Some(bad)),
            // Every element is finite: some squares overflowed the narrow type.
            None => (
                exact_square_sum(
                    chunks
                        .iter()
                        .filter(|c| !self.absent[c.seg])
                        .flat_map(|c| &grads[c.seg][c.start..c.end]),
                ),
                None,
            ),
        }
    }

    /// The first non-finite gradient element, as (segment, index, value).
    fn first_non_finite(&self, grads: &[&[T]]) -> Option<(usize, usize, f64)> {
        self.plan
            .chunks
            .iter()
            .filter(|c| !self.absent[c.seg])
            .find_map(|c| {
                let g = &grads[c.seg][c.start..c.end];
                g.iter()
                    .position(|x| !x.is_finite())
                    .map(|i| (c.seg, c.start + i, g[i].to_f64()))
            })
    }

    /// The error of a fused pass that met a non-finite gradient; the optimizer refuses
    /// further steps until a state is loaded, since the chunks before it were updated.
    fn stop_on_non_finite(&mut self, grads: &[&[T]]) -> Error {
        let (seg, index, value) = self
            .first_non_finite(grads)
            .expect("a fused pass stops only on a non-finite gradient");
        let tensor = self.layout.segments()[seg].name.clone();
        let step = self.step + 1;
        self.failed = Some(format!(
            "the optimizer stopped at step {step} on a non-finite gradient in tensor '{tensor}' \
             and is partly updated; load a saved state to continue"
        ));
        Error::NonFiniteGradient {
            step,
            tensor,
            index,
            value,
            partly_updated: true,
        }
    }

    /// Runs one pass of the rule's pre-kernel (`PRE`) or update kernel over the chunks of every segment (`only == None`) or of one
    /// segment, with parameters at `self.param_ptrs`, and sums its results per segment.
    ///
    /// With `CHECK`, each chunk's gradients are first summed (squares) and checked while they
    /// come into the cache, so the step reads them from memory once; a chunk with a
    /// non-finite gradient is not updated, the chunks not yet started are left alone, and
    /// `true` is returned.
    fn pass<const PRE: bool, const CHECK: bool>(
        &mut self,
        only: Option<usize>,
        grads: &[&[T]],
        scale: T,
        bound: T,
    ) -> bool {
        let chunks = &self.plan.chunks;
        let segs = self.layout.segments();
        let coefs = &self.coefs;
        let params = &self.param_ptrs;
        let partials = Shared::new(&mut self.partials);
        let squares = Shared::new(&mut self.squares);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stop = &stop;
        let slot_views = &views(&mut self.slots);
        let compact_views = &views(&mut self.compact);
        let compact_slots = self.compact.len();
        let first_index = self.sync.as_ref().map_or(0, |s| s.dist.start) as u64;
        let step = self.step;
        let body = |ci: usize| {
            let c = chunks[ci];
            let seg = &segs[c.seg];
            let (ptr, _) = params[c.seg];
            let global = seg.offset + c.start..seg.offset + c.end;
            // SAFETY: chunks are disjoint ranges of their segment and of the flat state; each
            // is visited by exactly one thread, and the parameter borrow outlives the pass.
            unsafe {
                let mut slots = Slots {
                    a: slot_views[0].slice(global.clone()),
                    b: slot_views[1].slice(global.clone()),
                    c: slot_views[2].slice(global.clone()),
                };
                let raw = &grads[c.seg][c.start..c.end];
                if CHECK {
                    let mut sum = super::simd::wide_call(
                        #[inline(always)]
                        || square_sum(raw),
                    );
                    if !sum.is_finite() {
                        if raw.iter().all(|x| x.is_finite()) {
                            sum = exact_square_sum(raw);
                        } else {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    squares.slice(ci..ci + 1)[0] = sum;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        partials.slice(ci..ci + 1)[0] = [0.0; 4];
                        return;
                    }
                }
                let grad = Grad::new(raw, scale, bound);
                let p = (ptr as *mut T).add(c.start);
                let (coef, n) = (&coefs[c.seg], c.end - c.start);
                let kernel = inlined(
                    #[inline(always)]
                    |slots: &mut Slots<T>| {
                        if PRE {
                            pre::<R, T>(coef, p, n, grad, slots)
                        } else {
                            update::<R, T>(coef, p, n, grad, slots)
                        }
                    },
                );
                partials.slice(ci..ci + 1)[0] = if compact_slots == 0 {
                    // Inlined, so that the kernel is compiled for the wide instructions.
                    super::simd::wide_call(
                        #[inline(always)]
                        || kernel(&mut slots),
                    )
                } else {
                    // bf16 buffers read and written by the kernel itself.
                    let first = first_index + global.start as u64;
                    let [a, b, c] = std::array::from_fn(|k| {
                        let bits = compact_views[k].slice(global.clone());
                        compact::Bf16Slot::new(bits, first, step, k as u32)
                    });
                    let slots = &mut CompactSlots { a, b, c };
                    let params = std::slice::from_raw_parts_mut(p, n);
                    super::simd::wide_call(
                        #[inline(always)]
                        || {
                            if PRE {
                                R::compact_pre_kernel(coef, params, grad, slots)
                            } else {
                                R::compact_kernel(coef, params, grad, slots)
                            }
                        },
                    )
                };
            }
        };
        match only {
            None => self.plan.for_each(body),
            Some(seg) => self
                .plan
                .for_each_in(self.plan.seg_chunks[seg].clone(), body),
        }
        let segments = match only {
            None => 0..self.plan.seg_chunks.len(),
            Some(seg) => seg..seg + 1,
        };
        for seg in segments {
            let mut sums = [0.0; 4];
            for part in &self.partials[self.plan.seg_chunks[seg].clone()] {
                for k in 0..4 {
                    sums[k] += part[k];
                }
            }
            self.seg_sums[seg] = sums;
        }
        stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Combines the per-tensor sums of the last pass with the other ranks' (sharded engines).
    fn combine_sums(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.combine(&mut self.seg_sums);
        }
    }

    fn check_param_len(&self, seg: usize, len: usize) -> Result<()> {
        let s = &self.layout.segments()[seg];
        if len != s.len {
            return Err(Error::Layout(format!(
                "tensor '{}': expected {} parameters, got {len}",
                s.name, s.len
            )));
        }
        Ok(())
    }

    fn check_grads(&self, grads: &[&[T]]) -> Result<()> {
        let segs = self.layout.segments();
        if grads.len() != segs.len() {
            return Err(Error::Layout(format!(
                "{}: expected {} gradient tensors, got {}",
                self.name(),
                segs.len(),
                grads.len()
            )));
        }
        for ((seg, g), absent) in segs.iter().zip(grads).zip(&self.absent) {
            if !absent && g.len() != seg.len {
                return Err(Error::Layout(format!(
                    "tensor '{}': expected {} gradients, got {}",
                    seg.name,
                    seg.len,
                    g.len()
                )));
            }
        }
        Ok(())
    }
}

/// Sum of squares of a gradient chunk. A NaN or infinite element makes it NaN or infinite, so
/// it doubles as the non-finite check. Squares are summed in the gradients' own type over
/// groups of [`SQUARE_GROUP`] per lane (16 f32 lanes per AVX-512 instruction instead of 8
/// f64), then in f64: a group's relative error is below `SQUARE_GROUP · ε` (4e-6 in f32, the
/// accuracy of PyTorch's f32 norms). Fixed lanes and groups: vectorisable, and the same sum
/// whatever the thread count. Finite f32 elements above 1.8e19 overflow a square: callers
/// then fall back to [`exact_square_sum`].
#[inline(always)]
fn square_sum<T: Real>(g: &[T]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let (blocks, tail) = g.as_chunks::<LANES>();
    for group in blocks.chunks(SQUARE_GROUP) {
        let mut inner = [T::ZERO; LANES];
        for block in group {
            for (acc, &x) in inner.iter_mut().zip(block) {
                *acc = *acc + x * x;
            }
        }
        for (lane, acc) in lanes.iter_mut().zip(inner) {
            *lane += acc.to_f64();
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(tail) {
        let x = x.to_f64();
        *lane += x * x;
    }
    lanes.iter().sum()
}

/// Sum of squares in f64 (infinite only where f64 overflows, as PyTorch's norm would be).
fn exact_square_sum<'a, T: Real>(g: impl IntoIterator<Item = &'a T>) -> f64 {
    g.into_iter().map(|x| x.to_f64() * x.to_f64()).sum()
}

/// Shared views of up to three element buffers (the missing ones empty).
fn views<S>(buffers: &mut [Vec<S>]) -> [Shared<S>; 3] {
    let mut each = buffers.iter_mut();
    std::array::from_fn(|_| each.next().map_or_else(Shared::empty, |b| Shared::new(b)))
}

/// Returns its argument: lets a closure carry `#[inline(always)]` (attributes on closures are
/// accepted in argument position).
#[inline(always)]
fn inlined<F>(f: F) -> F {
    f
}

/// Kernel adapters: the pre-pass reads parameters, the update writes them.
#[inline(always)]
fn pre<R: Rule, T: Real>(c: &R::Coef, p: *mut T, n: usize, g: Grad<T>, s: &mut Slots<T>) -> Sums {
    // SAFETY: `p` points to `n` parameters that nobody writes during the pre-pass.
    R::pre_kernel(c, unsafe { std::slice::from_raw_parts(p, n) }, g, s)
}

#[inline(always)]
fn update<R: Rule, T: Real>(
    c: &R::Coef,
    p: *mut T,
    n: usize,
    g: Grad<T>,
    s: &mut Slots<T>,
) -> Sums {
    // SAFETY: `p` points to `n` parameters this chunk alone writes.
    R::kernel(c, unsafe { std::slice::from_raw_parts_mut(p, n) }, g, s)
}

/// A group's configuration, and whether it asks for bfloat16 state (`state_dtype`).
fn parse_config<R: Rule>(spec: &Spec) -> Result<(R::Config, bool)> {
    let args = Args::new(spec, 0);
    let cfg = R::parse(&args)?;
    let dtype = args.word("state_dtype", "f32", &["f32", "bf16"])?;
    if dtype == "bf16" && !R::COMPACT_STATE {
        return Err(args.invalid(
            "state_dtype",
            format!(
                "bf16 is for the optimizers whose state is moving averages (adam, adamw, \
                 nadam, radam, adamax, lamb, lion); '{}' keeps full precision",
                spec.name
            ),
        ));
    }
    args.finish()?;
    Ok((cfg, dtype == "bf16"))
}

impl<T: Real, R: Rule> Optimizer<T> for Engine<T, R> {
    fn name(&self) -> &'static str {
        R::name(&self.configs[0])
    }

    fn spec(&self) -> Spec {
        self.spec_of(&self.configs[0])
    }

    fn group_specs(&self) -> Vec<Spec> {
        self.configs.iter().map(|c| self.spec_of(c)).collect()
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn options(&self) -> &Options {
        &self.options
    }

    fn steps(&self) -> u64 {
        self.step
    }

    fn num_groups(&self) -> usize {
        self.configs.len()
    }

    fn lr(&self, group: usize) -> f64 {
        R::lr(&self.configs[group])
    }

    fn set_lr(&mut self, group: usize, lr: f64) {
        R::set_lr(&mut self.configs[group], lr)
    }

    fn momentum(&self, group: usize) -> Option<f64> {
        R::momentum(&self.configs[group])
    }

    fn set_momentum(&mut self, group: usize, momentum: f64) -> Result<()> {
        if R::set_momentum(&mut self.configs[group], momentum) {
            Ok(())
        } else {
            Err(Error::Layout(format!(
                "optimizer '{}' has no momentum or beta1 to set",
                self.name()
            )))
        }
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        self.check_grads(grads)?;
        if params.count() != self.layout.segments().len() {
            return Err(Error::Layout(format!(
                "{}: expected {} parameter tensors, got {}",
                self.name(),
                self.layout.segments().len(),
                params.count()
            )));
        }
        // Without some gradients, the tensors go one at a time (the absent ones skipped).
        let some_absent = self.absent.iter().any(|&a| a);
        let held = !some_absent && params.pointers(&mut self.param_ptrs);
        if held {
            for seg in 0..self.param_ptrs.len() {
                self.check_param_len(seg, self.param_ptrs[seg].1)?;
            }
        }
        if some_absent {
            if self.sync.is_some() {
                let seg = self.absent.iter().position(|&a| a).unwrap_or(0);
                return Err(super::refuse_absent(self.name(), &self.layout, seg));
            }
            self.squares.fill(0.0);
        } else if self.sync.is_some() && !held {
            return Err(Error::Layout(format!(
                "{}: a sharded optimizer needs every parameter as a slice",
                self.name()
            )));
        }
        if let Some(reason) = &self.failed {
            return Err(state_error(None, reason.clone()));
        }
        if self.eval {
            return Err(Error::Layout(format!(
                "{}: the parameters hold the evaluation point (eval_mode); call train_mode before the next step",
                self.name()
            )));
        }
        // One pass over the gradients when nothing must be known before the update: they
        // are checked chunk by chunk while they are in the cache (see `pass`), tensor by
        // tensor when they are lent one at a time.
        let fused = self.sync.is_none()
            && self.options.clip_norm.is_none()
            && self.options.nonfinite == NonFinitePolicy::Error;
        let (sumsq, bad) = if fused {
            (0.0, None)
        } else {
            self.gradient_pass(grads)
        };
        let dist = self.sync.as_ref().map(|s| &s.dist);
        let (sumsq, bad) = crate::dist::combine_check(&self.layout, dist, sumsq, bad);
        if let Some((tensor, index, value)) = bad {
            return match self.options.nonfinite {
                NonFinitePolicy::Error => Err(Error::NonFiniteGradient {
                    step: self.step + 1,
                    tensor,
                    index,
                    value,
                    partly_updated: false,
                }),
                NonFinitePolicy::Skip => Ok(StepOutcome::SKIPPED),
            };
        }
        let mut grad_norm = sumsq.sqrt();
        let clip_coef = match self.options.clip_norm {
            Some(max_norm) => (max_norm / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let scale = T::from_f64(clip_coef);
        let bound = T::from_f64(self.options.clip_value.unwrap_or(f64::INFINITY));
        for (seg, &g) in self.seg_group.iter().enumerate() {
            if !self.absent[seg] {
                self.coefs[seg] = R::begin(&self.configs[g], &mut self.scalars[seg]);
            }
        }
        if held {
            // Every tensor at hand: one pass over all chunks at once.
            let stopped = match (R::PRE_PASS, fused) {
                (true, true) => self.pass::<true, true>(None, grads, scale, bound),
                (true, false) => self.pass::<true, false>(None, grads, scale, bound),
                (false, true) => self.pass::<false, true>(None, grads, scale, bound),
                (false, false) => self.pass::<false, false>(None, grads, scale, bound),
            };
            if stopped {
                return Err(self.stop_on_non_finite(grads));
            }
            if R::PRE_PASS {
                self.combine_sums();
                for (seg, &g) in self.seg_group.iter().enumerate() {
                    R::mid(&self.configs[g], &mut self.coefs[seg], self.seg_sums[seg]);
                }
                self.pass::<false, false>(None, grads, scale, bound);
            }
            if R::KERNEL_SUMS {
                self.combine_sums();
            }
        } else {
            // Tensors lent one at a time (e.g. by candle's in-place ops).
            let mut stopped = false;
            for seg in 0..self.layout.segments().len() {
                if self.absent[seg] {
                    continue;
                }
                if R::PRE_PASS {
                    let mut failed = None;
                    params.read(seg, &mut |p: &[T]| {
                        if let Err(e) = self.check_param_len(seg, p.len()) {
                            failed = Some(e);
                            return;
                        }
                        self.param_ptrs[seg] = (p.as_ptr() as usize, p.len());
                        stopped = if fused {
                            self.pass::<true, true>(Some(seg), grads, scale, bound)
                        } else {
                            self.pass::<true, false>(Some(seg), grads, scale, bound)
                        };
                    })?;
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    if stopped {
                        return Err(self.stop_on_non_finite(grads));
                    }
                    let g = self.seg_group[seg];
                    R::mid(&self.configs[g], &mut self.coefs[seg], self.seg_sums[seg]);
                }
                let mut failed = None;
                params.update(seg, &mut |p: &mut [T]| {
                    if let Err(e) = self.check_param_len(seg, p.len()) {
                        failed = Some(e);
                        return;
                    }
                    self.param_ptrs[seg] = (p.as_mut_ptr() as usize, p.len());
                    stopped = if fused && !R::PRE_PASS {
                        self.pass::<false, true>(Some(seg), grads, scale, bound)
                    } else {
                        self.pass::<false, false>(Some(seg), grads, scale, bound)
                    };
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
                if stopped {
                    return Err(self.stop_on_non_finite(grads));
                }
            }
        }
        if fused {
            grad_norm = self.squares.iter().sum::<f64>().sqrt();
        }
        for (seg, &g) in self.seg_group.iter().enumerate() {
            if self.absent[seg] {
                continue;
            }
            R::end(
                &self.configs[g],
                &mut self.scalars[seg],
                &self.coefs[seg],
                self.seg_sums[seg],
            );
        }
        self.step += 1;
        Ok(StepOutcome {
            skipped: false,
            grad_norm,
            clip_coef,
        })
    }

    fn step_with_absent(
        &mut self,
        grads: &[&[T]],
        absent: &[bool],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        if absent.len() != self.absent.len() {
            return Err(Error::Layout(format!(
                "{}: expected {} entries in the mask of absent gradients, got {}",
                self.name(),
                self.absent.len(),
                absent.len()
            )));
        }
        self.absent.copy_from_slice(absent);
        let outcome = self.step_with(grads, params);
        self.absent.fill(false);
        outcome
    }

    fn state_bytes(&self) -> usize {
        let full: usize = self.slots.iter().map(Vec::len).sum();
        let compact: usize = self.compact.iter().map(Vec::len).sum();
        full * std::mem::size_of::<T>() + compact * 2
    }

    fn bytes_per_param(&self) -> f64 {
        let cfg = &self.configs[0];
        let (all, state) = (R::traffic(cfg), R::slot_traffic(cfg));
        let value = std::mem::size_of::<T>();
        let stored = if self.compact.is_empty() { value } else { 2 };
        ((all - state) * value + state * stored) as f64
    }

    fn scalar_state(&self) -> Vec<(String, Vec<(&'static str, f64)>)> {
        self.layout
            .segments()
            .iter()
            .zip(&self.scalars)
            .map(|(seg, s)| {
                let named = R::SCALARS
                    .iter()
                    .zip(s.iter())
                    .map(|(k, v)| (*k, *v))
                    .collect();
                (seg.name.clone(), named)
            })
            .collect()
    }

    fn state_dict(&self) -> StateDict<T> {
        let mut tensors = BTreeMap::new();
        let mut scalars = BTreeMap::new();
        for (i, seg) in self.layout.segments().iter().enumerate() {
            for (slot, name) in self.slot_names.iter().enumerate() {
                let values = self.slot_values(slot, seg.offset..seg.offset + seg.len);
                tensors.insert(
                    format!("{}/{}", seg.name, name),
                    (seg.shape.clone(), values),
                );
            }
            let named = R::SCALARS
                .iter()
                .zip(self.scalars[i].iter())
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            scalars.insert(seg.name.clone(), named);
        }
        StateDict {
            meta: StateMeta {
                version: STATE_VERSION,
                optimizer: self.name().to_string(),
                groups: self.group_specs().iter().map(|s| s.to_string()).collect(),
                step: self.step,
                scalars,
                extra: if R::EVAL_POINT {
                    BTreeMap::from([(EVAL_MODE.to_string(), if self.eval { 1.0 } else { 0.0 })])
                } else {
                    BTreeMap::new()
                },
                whole: Default::default(),
            },
            tensors,
        }
    }

    fn has_eval_point(&self) -> bool {
        R::EVAL_POINT
    }

    fn eval_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.swap_point(params, true)
    }

    fn train_mode(&mut self, params: &mut dyn ParamAccess<T>) -> Result<()> {
        self.swap_point(params, false)
    }

    fn load_state_dict(&mut self, state: &StateDict<T>) -> Result<()> {
        let meta = &state.meta;
        if meta.version != STATE_VERSION {
            return Err(state_error(
                None,
                format!("format version {} is not supported", meta.version),
            ));
        }
        super::state::check_optimizer(&meta.optimizer, self.name())?;
        if meta.groups.len() != self.configs.len() {
            return Err(state_error(
                None,
                format!(
                    "has {} parameter groups, the optimizer has {}",
                    meta.groups.len(),
                    self.configs.len()
                ),
            ));
        }
        // Check everything before changing anything.
        let mut expected = std::collections::BTreeSet::new();
        for seg in self.layout.segments() {
            for name in &self.slot_names {
                let key = format!("{}/{}", seg.name, name);
                match state.tensors.get(&key) {
                    None => return Err(state_error(None, format!("tensor '{key}' is missing"))),
                    Some((shape, values)) if *shape != seg.shape || values.len() != seg.len => {
                        return Err(state_error(
                            None,
                            format!(
                                "tensor '{key}' has shape {shape:?}, the parameter has shape {:?}",
                                seg.shape
                            ),
                        ))
                    }
                    Some(_) => {}
                }
                expected.insert(key);
            }
            let s = meta.scalars.get(&seg.name).ok_or_else(|| {
                state_error(
                    None,
                    format!("scalars of tensor '{}' are missing", seg.name),
                )
            })?;
            for k in R::SCALARS {
                if !s.contains_key(*k) {
                    return Err(state_error(
                        None,
                        format!("scalar '{k}' of tensor '{}' is missing", seg.name),
                    ));
                }
            }
        }
        if let Some(extra) = state.tensors.keys().find(|k| !expected.contains(*k)) {
            return Err(state_error(
                None,
                format!("tensor '{extra}' does not belong to this optimizer's parameters"),
            ));
        }
        if let Some(extra) = meta
            .scalars
            .keys()
            .find(|k| self.layout.index_of(k).is_none())
        {
            return Err(state_error(
                None,
                format!("scalars for unknown tensor '{extra}'"),
            ));
        }
        let eval = match meta.extra.get(EVAL_MODE) {
            None => false,
            Some(v) if *v == 0.0 || *v == 1.0 => R::EVAL_POINT && *v == 1.0,
            Some(v) => {
                return Err(state_error(
                    None,
                    format!("scalar '{EVAL_MODE}' is {v}; it must be 0 (train) or 1 (eval)"),
                ))
            }
        };
        let configs = meta
            .groups
            .iter()
            .map(|g| crate::spec::parse(g).and_then(|s| parse_config::<R>(&s)))
            .map(|r| r.map(|(cfg, _)| cfg))
            .collect::<Result<Vec<_>>>()?;
        let segments = self.layout.segments().to_vec();
        for (i, seg) in segments.iter().enumerate() {
            for slot in 0..self.slot_names.len() {
                let key = format!("{}/{}", seg.name, self.slot_names[slot]);
                let (_, values) = &state.tensors[&key];
                self.set_slot_values(slot, seg.offset..seg.offset + seg.len, values);
            }
            let s = &meta.scalars[&seg.name];
            for (k, name) in R::SCALARS.iter().enumerate() {
                self.scalars[i][k] = s[*name];
            }
        }
        self.configs = configs;
        self.step = meta.step;
        self.failed = None;
        self.eval = eval;
        Ok(())
    }
}
