//! The generic engine that runs any [`Rule`] over a layout. Here: the engine's data, its
//! construction from specs and groups, bf16 state, the evaluation point and the
//! [`Optimizer`] interface. `step` (checks, clipping factors, the sweep over tensors held or
//! lent), `pass` (one fused kernel pass over chunks on the thread pool), `gradient_check`
//! (non-finite gradients and the global norm) and `saved` (state save/restore) hold the rest.

use super::bf16;
use super::hyper::{GroupHypers, Hyper};
use super::plan::Plan;
use super::rule::{Rule, Scalars, Sums};
use super::state::StateDict;
use super::{Optimizer, Options, ParamAccess, StepOutcome};
use crate::dist::ShardSync;
use crate::optim::layout::Layout;
use crate::spec::{Args, Spec, Value};
use crate::{Error, Real, Result};

mod gradient_check;
mod pass;
mod saved;
mod step;

/// The state scalar that records whether the parameters hold the evaluation point.
const EVAL_MODE: &str = "eval_mode";

/// Blocks of [`LANES`] squares summed in the gradients' type before going into the f64 lanes.
const SQUARE_GROUP: usize = 64;

/// One optimizer: a rule, its group configurations and its state over a layout.
pub struct Engine<T: Real, R: Rule> {
    layout: Layout,
    configs: Vec<R::Config>,
    /// Each group's learning rate and momentum: their one owner, read at every step.
    hypers: GroupHypers,
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
    /// Builds the engine: `configs[0]` and `hypers[0]` are the base group's; `seg_group[i]`
    /// picks segment i's group.
    pub fn new(
        layout: Layout,
        configs: Vec<R::Config>,
        hypers: Vec<Hyper>,
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
            .map(|&g| R::scalars_init(&configs[g], &hypers[g]))
            .collect();
        Engine {
            configs,
            hypers: GroupHypers::new(hypers),
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
        let (base, base_hyper, compact) = parse_config::<R>(spec)?;
        let (mut configs, mut hypers) = (vec![base], vec![base_hyper]);
        for group in groups {
            let merged = group.apply(spec);
            let (config, hyper, group_compact) = parse_config::<R>(&merged)?;
            if group_compact != compact {
                return Err(Args::new(&merged, 0).invalid(
                    "state_dtype",
                    "is set for the whole optimizer, not per parameter group",
                ));
            }
            configs.push(config);
            hypers.push(hyper);
        }
        let seg_group = super::assign_groups(&layout, groups, &options)?;
        let engine = Self::new(layout, configs, hypers, seg_group, options);
        Ok(if compact {
            engine.with_bf16_state()
        } else {
            engine
        })
    }

    /// Stores the element buffers in bfloat16 (see [`bf16`]).
    fn with_bf16_state(mut self) -> Self {
        self.compact = self
            .slots
            .iter()
            .map(|buf| {
                buf.iter()
                    .map(|x| bf16::to_bf16_nearest(x.to_f32()))
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
                .map(|&b| T::from_f32(bf16::from_bf16(b)))
                .collect(),
            None => self.slots[slot][range].to_vec(),
        }
    }

    /// Sets values `range` of element buffer `slot` (rounded to nearest in bfloat16).
    fn set_slot_values(&mut self, slot: usize, range: std::ops::Range<usize>, values: &[T]) {
        match self.compact.get_mut(slot) {
            Some(bits) => {
                for (b, x) in bits[range].iter_mut().zip(values) {
                    *b = bf16::to_bf16_nearest(x.to_f32());
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
        crate::optim::check_param_count(self.name(), &self.layout, params)?;
        for (i, seg) in self.layout.segments().iter().enumerate() {
            if self.scalars[i][0] == 0.0 {
                continue; // no step yet: both points are the initial weights
            }
            let range = seg.offset..seg.offset + seg.len;
            let slots: Vec<Vec<T>> = (0..self.slot_names.len())
                .map(|k| self.slot_values(k, range.clone()))
                .collect();
            let g = self.seg_group[i];
            let (cfg, h) = (&self.configs[g], self.hypers.group(g));
            let mut wrong_len = None;
            params.update(i, &mut |p: &mut [T]| {
                if p.len() == seg.len {
                    R::swap_point(cfg, h, p, &slots, to_eval);
                } else {
                    wrong_len = Some(p.len());
                }
            })?;
            if let Some(len) = wrong_len {
                return Err(Error::Length {
                    what: format!("{}: tensor '{}'", self.name(), seg.name),
                    got: len,
                    unit: "elements",
                    expected: seg.len,
                });
            }
        }
        self.eval = to_eval;
        Ok(())
    }

    /// The spec of group `g`, with `state_dtype` when it is not the default.
    fn spec_of(&self, g: usize) -> Spec {
        let spec = R::to_spec(&self.configs[g], self.hypers.group(g));
        if self.compact.is_empty() {
            spec
        } else {
            spec.with("state_dtype", Value::Word("bf16".into()))
        }
    }

    fn check_param_len(&self, seg: usize, len: usize) -> Result<()> {
        let s = &self.layout.segments()[seg];
        if len != s.len {
            return Err(Error::Length {
                what: format!("tensor '{}'", s.name),
                got: len,
                unit: "parameters",
                expected: s.len,
            });
        }
        Ok(())
    }

    fn check_grads(&self, grads: &[&[T]]) -> Result<()> {
        let segs = self.layout.segments();
        if grads.len() != segs.len() {
            return Err(Error::Length {
                what: self.name().to_string(),
                got: grads.len(),
                unit: "gradient tensors",
                expected: segs.len(),
            });
        }
        for ((seg, g), absent) in segs.iter().zip(grads).zip(&self.absent) {
            if !absent && g.len() != seg.len {
                return Err(Error::Length {
                    what: format!("tensor '{}'", seg.name),
                    got: g.len(),
                    unit: "gradients",
                    expected: seg.len,
                });
            }
        }
        Ok(())
    }
}

/// A group's configuration, its learning rate and momentum, and whether it asks for
/// bfloat16 state (`state_dtype`).
fn parse_config<R: Rule>(spec: &Spec) -> Result<(R::Config, Hyper, bool)> {
    let args = Args::new(spec, 0);
    let (cfg, hyper) = R::parse(&args)?;
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
    Ok((cfg, hyper, dtype == "bf16"))
}

impl<T: Real, R: Rule> Optimizer<T> for Engine<T, R> {
    fn name(&self) -> &'static str {
        R::name(&self.configs[0])
    }

    fn spec(&self) -> Spec {
        self.spec_of(0)
    }

    fn group_specs(&self) -> Vec<Spec> {
        (0..self.configs.len()).map(|g| self.spec_of(g)).collect()
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

    fn hypers(&self) -> &[Hyper] {
        self.hypers.values()
    }

    fn hypers_mut(&mut self) -> &mut [Hyper] {
        self.hypers.values_mut()
    }

    fn step_with(
        &mut self,
        grads: &[&[T]],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        self.step(grads, params)
    }

    fn step_with_absent(
        &mut self,
        grads: &[&[T]],
        absent: &[bool],
        params: &mut dyn ParamAccess<T>,
    ) -> Result<StepOutcome> {
        if absent.len() != self.absent.len() {
            return Err(Error::Length {
                what: format!("{}: the mask of absent gradients", self.name()),
                got: absent.len(),
                unit: "entries",
                expected: self.absent.len(),
            });
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
        let (all, state) = (R::traffic(cfg, self.hypers.group(0)), R::slot_traffic(cfg));
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
        self.saved_state()
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
        self.restore_state(state)
    }
}
