//! The interface between the generic engine and one update rule.
//!
//! A rule says which per-element state buffers ("slots") and per-tensor scalars it keeps,
//! computes its per-tensor coefficients once per step in `f64` ([`Rule::begin`]), and
//! updates one contiguous chunk of one tensor in a single fused pass ([`Rule::kernel`]).
//! Rules that need per-tensor norms first (LARS, LAMB) run [`Rule::pre_kernel`] over the
//! whole tensor, then [`Rule::mid`] turns the norms into coefficients.

pub use super::clip::Grad;
pub use super::hyper::Hyper;
use crate::spec::{Args, Spec};
use crate::{Real, Result};

/// Reductions a kernel returns for its chunk (summed per tensor in a fixed order).
pub type Sums = [f64; 4];

/// Per-tensor scalar state (`step` and rule-specific values), named by [`Rule::SCALARS`].
pub type Scalars = [f64; 6];

/// Up to three per-element state buffers of one chunk (unused ones are empty), stored as the
/// parameters' type (`&mut [T]`) or in bfloat16 ([`super::bf16::Bf16Slot`]): one kernel
/// serves both.
pub struct Slots<B> {
    /// First slot (e.g. `exp_avg`).
    pub a: B,
    /// Second slot (e.g. `exp_avg_sq`).
    pub b: B,
    /// Third slot (e.g. `max_exp_avg_sq`).
    pub c: B,
}

/// An element buffer as a kernel sees it: values of `T`, stored as `T` or as bfloat16, so
/// that one loop serves both. Loops take buffers by value, so that their pointers stay in
/// registers (and the loop vectorises).
pub trait Buffer<T: Real> {
    /// Element `i` (below the chunk's length).
    fn get(&self, i: usize) -> T;
    /// Sets element `i`.
    fn set(&mut self, i: usize, x: T);
    /// Panics unless the buffer holds at least `n` elements. Called before a loop over `n`
    /// elements, it lets the compiler drop the loop's bounds checks.
    fn assert_len(&self, n: usize);
    /// Element `i` without a bounds check, for loops the compiler cannot see bounded.
    ///
    /// # Safety
    /// `i` is below the buffer's length.
    unsafe fn get_unchecked(&self, i: usize) -> T;
    /// Sets element `i` without a bounds check.
    ///
    /// # Safety
    /// `i` is below the buffer's length.
    unsafe fn set_unchecked(&mut self, i: usize, x: T);
    /// A bfloat16 buffer's bits and rounding base (see [`super::bf16::Bf16Slot`]), for
    /// hand-vectorised loops; `None` for other storage.
    fn bf16_parts(&mut self) -> Option<(&mut [u16], u32)> {
        None
    }
    /// Requests the cache line of element `i` ahead of a loop that will read it (a hint that
    /// never faults: `i` may lie past the end). Storage that is not a contiguous array
    /// ignores it.
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        let _ = i;
    }
}

impl<T: Real> Buffer<T> for &mut [T] {
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        super::prefetch::line(self.as_ptr(), i);
    }
    #[inline(always)]
    fn get(&self, i: usize) -> T {
        self[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: T) {
        self[i] = x;
    }
    #[inline(always)]
    fn assert_len(&self, n: usize) {
        assert!(self.len() >= n, "a state buffer is shorter than its tensor");
    }
    #[inline(always)]
    unsafe fn get_unchecked(&self, i: usize) -> T {
        // SAFETY: the caller keeps `i` below the length.
        unsafe { *<[T]>::get_unchecked(self, i) }
    }
    #[inline(always)]
    unsafe fn set_unchecked(&mut self, i: usize, x: T) {
        // SAFETY: the caller keeps `i` below the length.
        unsafe { *<[T]>::get_unchecked_mut(self, i) = x }
    }
}

impl<T: Real> Buffer<T> for super::bf16::Bf16Slot<'_> {
    #[inline(always)]
    fn prefetch(&self, i: usize) {
        super::bf16::Bf16Slot::prefetch(self, i);
    }
    fn bf16_parts(&mut self) -> Option<(&mut [u16], u32)> {
        Some(self.parts())
    }
    #[inline(always)]
    fn get(&self, i: usize) -> T {
        super::bf16::Bf16Slot::get(self, i)
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: T) {
        super::bf16::Bf16Slot::set(self, i, x)
    }
    #[inline(always)]
    fn assert_len(&self, n: usize) {
        assert!(self.len() >= n, "a state buffer is shorter than its tensor");
    }
    #[inline(always)]
    unsafe fn get_unchecked(&self, i: usize) -> T {
        // SAFETY: the caller keeps `i` below the length.
        unsafe { super::bf16::Bf16Slot::get_unchecked(self, i) }
    }
    #[inline(always)]
    unsafe fn set_unchecked(&mut self, i: usize, x: T) {
        // SAFETY: the caller keeps `i` below the length.
        unsafe { super::bf16::Bf16Slot::set_unchecked(self, i, x) }
    }
}

/// One optimizer's update rule; see the module documentation.
pub trait Rule: Sized + Send + Sync + 'static {
    /// Hyperparameters of one parameter group.
    type Config: Clone + Send + Sync + std::fmt::Debug;
    /// Coefficients of one tensor's step, computed once per step.
    type Coef: Default + Copy + Send + Sync;

    /// Spec name.
    const NAME: &'static str;
    /// Names of the per-tensor scalars (the first is always `step`).
    const SCALARS: &'static [&'static str] = &["step"];
    /// Whether [`Rule::pre_kernel`] must run over the tensor before the update.
    const PRE_PASS: bool = false;
    /// Whether [`Rule::end`] reads the update pass's sums (they are then combined over the
    /// ranks of a sharded run).
    const KERNEL_SUMS: bool = false;
    /// Whether the rule's element buffers may be stored in bfloat16 (`state_dtype=bf16`):
    /// moving averages tolerate it (with stochastic rounding); running sums such as
    /// Adagrad's would stall, so those rules keep full precision. The kernels are the same
    /// for both storages ([`Buffer`]).
    const COMPACT_STATE: bool = false;

    /// Whether the point where the model is evaluated differs from the one where gradients
    /// are taken (schedule-free): the engine then moves the parameters between them with
    /// [`Rule::swap_point`] on `eval_mode` / `train_mode`.
    const EVAL_POINT: bool = false;

    /// Reads and validates the hyperparameters: what never changes during a run, and the
    /// group's learning rate and momentum (β1), which the engine owns from then on.
    fn parse(args: &Args) -> Result<(Self::Config, Hyper)>;
    /// The canonical spec with every hyperparameter, `h` giving the learning rate and
    /// momentum as they stand.
    fn to_spec(cfg: &Self::Config, h: &Hyper) -> Spec;
    /// Names of the element buffers this rule keeps for these group configurations.
    fn slots(cfgs: &[Self::Config]) -> Vec<&'static str>;
    /// Parameter-sized arrays the step must read or write per element (parameters read and
    /// written count 2, the gradient 1, a state buffer read and written 2; pre-passes
    /// included): what `gradlab bench` counts as the bytes the algorithm must move.
    fn traffic(cfg: &Self::Config, _h: &Hyper) -> usize {
        3 + 2 * Self::slots(std::slice::from_ref(cfg)).len()
    }
    /// How many of [`Rule::traffic`]'s arrays are element buffers (state), which
    /// `state_dtype=bf16` stores in 2 bytes.
    fn slot_traffic(cfg: &Self::Config) -> usize {
        2 * Self::slots(std::slice::from_ref(cfg)).len()
    }
    /// Initial value of element buffer `slot`.
    fn slot_init(_cfg: &Self::Config, _slot: usize) -> f64 {
        0.0
    }
    /// Initial per-tensor scalars.
    fn scalars_init(_cfg: &Self::Config, _h: &Hyper) -> Scalars {
        [0.0; 6]
    }
    /// The spec name this configuration was built from (`adam` or `adamw`, ...).
    fn name(_cfg: &Self::Config) -> &'static str {
        Self::NAME
    }
    /// Advances the per-tensor scalars for a new step and computes its coefficients from the
    /// configuration and the group's learning rate and momentum as they stand.
    fn begin(cfg: &Self::Config, h: &Hyper, s: &mut Scalars) -> Self::Coef;
    /// Optional first pass (norms); may update slots.
    #[inline(always)]
    fn pre_kernel<T: Real, B: Buffer<T>>(
        _c: &Self::Coef,
        _p: &[T],
        _g: Grad<T>,
        _s: Slots<B>,
    ) -> Sums {
        [0.0; 4]
    }
    /// Turns the first pass's sums into coefficients.
    fn mid(_cfg: &Self::Config, _c: &mut Self::Coef, _sums: Sums) {}
    /// The fused update of one chunk, whatever its element buffers are stored in.
    fn kernel<T: Real, B: Buffer<T>>(c: &Self::Coef, p: &mut [T], g: Grad<T>, s: Slots<B>) -> Sums;
    /// Moves one tensor's parameters to its evaluation point (`to_eval`) or back to the
    /// gradient point, given its element buffers (only called when [`Rule::EVAL_POINT`],
    /// and only for tensors that have taken a step).
    fn swap_point<T: Real>(
        _cfg: &Self::Config,
        _h: &Hyper,
        _p: &mut [T],
        _slots: &[Vec<T>],
        _to_eval: bool,
    ) {
    }
    /// Consumes the update pass's sums (e.g. SWATS's switch test).
    fn end(_cfg: &Self::Config, _s: &mut Scalars, _c: &Self::Coef, _sums: Sums) {}
}

/// Weight decay as the two terms the kernels apply: `(l2, factor)` with `g ← g + l2·θ` and
/// `θ ← factor·θ`. Coupled (L2) decay is `(λ, 1)`; decoupled decay (Loshchilov & Hutter,
/// PyTorch's AdamW convention) is `(0, 1 − γλ)`. The neutral values keep kernels branch-free.
pub fn decay_terms(decoupled: bool, lr: f64, weight_decay: f64) -> (f64, f64) {
    if decoupled {
        (0.0, 1.0 - lr * weight_decay)
    } else {
        (weight_decay, 1.0)
    }
}

/// Weight decay as pytorch-optimizer's `BaseOptimizer.apply_weight_decay` does it (ADOPT,
/// AdEMAMix), as [`decay_terms`]' `(l2, factor)`: decoupled `θ ← θ(1 − γλ)`, or with
/// `fixed_decay` `θ ← θ(1 − λ)` whatever the learning rate; otherwise L2 `g ← g + λθ`.
pub fn pytorch_optimizer_decay(
    decoupled: bool,
    fixed: bool,
    lr: f64,
    weight_decay: f64,
) -> (f64, f64) {
    decay_terms(decoupled, if fixed { 1.0 } else { lr }, weight_decay)
}

/// Independent partial sums kept by every reduction: enough to hide the latency of the
/// additions, and fixed, so that sums never depend on how work was split among threads.
pub const LANES: usize = 32;

/// Runs `f(i)` for every `i < n` in order and sums its results in [`LANES`] fixed lanes (so that
/// the loop vectorises and the sum does not depend on how the work was split). `f` may rely
/// on `i < n` (callers index unchecked: bounds checks would stop the vectorisation).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // indices keep the lanes fixed and vectorisable
pub fn lane_sums<const K: usize>(n: usize, mut f: impl FnMut(usize) -> [f64; K]) -> [f64; K] {
    let mut lanes = [[0.0f64; LANES]; K];
    let blocks = n / LANES;
    for b in 0..blocks {
        for l in 0..LANES {
            let r = f(b * LANES + l);
            for k in 0..K {
                lanes[k][l] += r[k];
            }
        }
    }
    for (l, i) in (blocks * LANES..n).enumerate() {
        let r = f(i);
        for k in 0..K {
            lanes[k][l] += r[k];
        }
    }
    let mut out = [0.0; K];
    for k in 0..K {
        out[k] = lanes[k].iter().sum();
    }
    out
}

/// [`lane_sums`] over the two halves of `0..n` at once: each iteration takes element `i` of
/// the first half and of the second. A pass that reads few arrays then keeps twice as many
/// memory streams in flight, which is what limits such a pass on one core (a single read
/// stream runs at about half the bandwidth of four). The order of the sum is fixed by `n`
/// alone. `f` may rely on `i < n`.
#[inline(always)]
pub fn paired_lane_sums<const K: usize>(
    n: usize,
    mut f: impl FnMut(usize) -> [f64; K],
) -> [f64; K] {
    let half = n / 2;
    let mut out = lane_sums(half, |i| {
        let (a, b) = (f(i), f(i + half));
        let mut r = [0.0; K];
        for k in 0..K {
            r[k] = a[k] + b[k];
        }
        r
    });
    if n % 2 == 1 {
        let r = f(n - 1);
        for k in 0..K {
            out[k] += r[k];
        }
    }
    out
}

/// Runs `f(i)` for every `i < n`, the two halves of `0..n` at once (see
/// [`paired_lane_sums`]); `f` must not depend on the order. `f` may rely on `i < n`.
#[inline(always)]
pub fn paired_for_each(n: usize, mut f: impl FnMut(usize)) {
    let half = n / 2;
    for i in 0..half {
        f(i);
        f(i + half);
    }
    if n % 2 == 1 {
        f(n - 1);
    }
}

/// β1, β2 and their complements in the elements' type: the Adam family's two moving
/// averages, written once. `v ← β2 v + (1 − β2) d²` is the same in every reference; the first
/// moment comes in PyTorch's `lerp_` form (Adam, AdamW, NAdam, RAdam, AdEMAMix) or in
/// torch-optimizer's `mul_(β1).add_(d, alpha=1 − β1)` form (LAMB, AdaBound, SWATS), which
/// round differently.
#[derive(Clone, Copy)]
pub struct Betas<T> {
    /// β1.
    pub b1: T,
    /// 1 − β1.
    pub w1: T,
    /// β2.
    pub b2: T,
    /// 1 − β2.
    pub w2: T,
}

impl<T: Real> Betas<T> {
    /// The constants of `(β1, β2)`.
    #[inline(always)]
    pub fn new(b1: f64, b2: f64) -> Self {
        Betas {
            b1: T::from_f64(b1),
            w1: T::from_f64(1.0 - b1),
            b2: T::from_f64(b2),
            w2: T::from_f64(1.0 - b2),
        }
    }

    /// `m ← lerp(m, d, 1 − β1)` as PyTorch computes it (see [`lerp`]).
    #[inline(always)]
    pub fn lerp_first(&self, m: T, d: T) -> T {
        lerp(m, d, self.w1, self.b1)
    }

    /// [`Betas::lerp_first`] with its form chosen outside the loop (`SMALL_WEIGHT`:
    /// `1 − β1 < 0.5`), so that the loop has no branch.
    #[inline(always)]
    pub fn lerp_first_in<const SMALL_WEIGHT: bool>(&self, m: T, d: T) -> T {
        if SMALL_WEIGHT {
            m + self.w1 * (d - m)
        } else {
            d - (d - m) * self.b1
        }
    }

    /// `m ← β1 m + (1 − β1) d` (torch-optimizer's form).
    #[inline(always)]
    pub fn mul_add_first(&self, m: T, d: T) -> T {
        m * self.b1 + self.w1 * d
    }

    /// `v ← β2 v + (1 − β2) d²`.
    #[inline(always)]
    pub fn second(&self, v: T, d: T) -> T {
        v * self.b2 + self.w2 * d * d
    }
}

/// Per-step constants of the Adam family's shared first half (see [`AdamMoments::step`]).
#[derive(Clone, Copy)]
pub struct AdamMoments<T> {
    /// β1, β2 and their complements.
    pub betas: Betas<T>,
    /// Coupled (L2) weight decay λ, or 0.
    pub l2: T,
    /// Decoupled decay factor 1 − γλ, or 1.
    pub decay: T,
}

impl<T: Real> AdamMoments<T> {
    /// The constants for betas `(b1, b2)` and decay terms from [`decay_terms`].
    pub fn new(b1: f64, b2: f64, l2: f64, decay: f64) -> Self {
        AdamMoments {
            betas: Betas::new(b1, b2),
            l2: T::from_f64(l2),
            decay: T::from_f64(decay),
        }
    }

    /// Element `i`'s weight decay and moments, as PyTorch's NAdam and RAdam do them:
    /// `θ ← θ·decay`, `d = g + λθ`, `m ← lerp(m, d, 1 − β1)`, `v ← β2 v + (1 − β2) d²`.
    /// Stores m and v and returns `(θ, d, m, v)`.
    #[inline(always)]
    pub fn step(
        &self,
        i: usize,
        theta: T,
        g: T,
        m: &mut impl Buffer<T>,
        v: &mut impl Buffer<T>,
    ) -> (T, T, T, T) {
        let theta = theta * self.decay;
        let d = g + self.l2 * theta;
        let m_new = self.betas.lerp_first(m.get(i), d);
        m.set(i, m_new);
        let v_new = self.betas.second(v.get(i), d);
        v.set(i, v_new);
        (theta, d, m_new, v_new)
    }
}

/// `m + w (x - m)` as PyTorch's `lerp_` computes it (the form depends on `|w| < 0.5`).
#[inline(always)]
pub fn lerp<T: Real>(m: T, x: T, w: T, one_minus_w: T) -> T {
    if w.abs() < T::from_f64(0.5) {
        m + w * (x - m)
    } else {
        x - (x - m) * one_minus_w
    }
}

/// Validation helpers shared by the rules, with PyTorch's ranges (through
/// [`crate::spec::Domain`], where every numeric key's range is checked).
pub mod check {
    use crate::spec::{Args, Domain};
    use crate::Result;

    /// A finite number `>= 0` (PyTorch: "Invalid learning rate", "Invalid epsilon value", ...).
    pub fn non_negative(args: &Args, key: &'static str, default: f64) -> Result<f64> {
        args.number(key, default, Domain::NON_NEGATIVE)
    }

    /// An averaging coefficient in `[0, 1)`: momentum, RMSProp's alpha, Adadelta's rho (at 1
    /// the average would never change).
    pub fn decay(args: &Args, key: &'static str, default: f64) -> Result<f64> {
        args.number(key, default, Domain::DECAY)
    }

    /// A fraction in `[0, 1]`: SGD's dampening (above 1 the momentum buffer would climb
    /// the gradient, below 0 amplify it).
    pub fn fraction(args: &Args, key: &'static str, default: f64) -> Result<f64> {
        args.number(key, default, Domain::UNIT)
    }

    /// A number in `[lo, hi]`.
    pub fn within(args: &Args, key: &'static str, default: f64, lo: f64, hi: f64) -> Result<f64> {
        args.number(key, default, Domain::new(lo, false, hi, false))
    }

    /// `betas=(b1, b2)` with both in `[0, 1)`.
    pub fn betas(args: &Args, default: (f64, f64)) -> Result<(f64, f64)> {
        args.pair_in("betas", default, Domain::DECAY)
    }
}
