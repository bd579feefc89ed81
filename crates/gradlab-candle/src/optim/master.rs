//! bfloat16 and float16 parameters: the optimizer keeps an f32 master copy of each, steps it
//! with the gradients widened to f32, and writes it back rounded to nearest into the
//! parameters (mixed-precision training's master weights). The master copies are saved with
//! the optimizer's state, so a resume continues bit for bit; a parameter changed from outside
//! (weights loaded into it) is taken up at the next step.

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Var};
use gradlab::optim::{self, ParamAccess, StateDict, StepOutcome};
use half::{bf16, f16};

/// The state key of a parameter's master copy.
const MASTER: &str = "master";

/// An f32 optimizer over f32 copies of 16-bit parameters.
pub(crate) struct MasterWeights {
    pub(crate) engine: Box<dyn optim::Optimizer<f32>>,
    master: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl MasterWeights {
    /// Master copies of `vars` (all bf16 or all f16) for `engine`.
    pub(crate) fn new(engine: Box<dyn optim::Optimizer<f32>>, vars: &[Var]) -> Result<Self> {
        let mut master = Vec::with_capacity(vars.len());
        for v in vars {
            let mut m = vec![0.0f32; v.elem_count()];
            read_widened(v, &mut m, true)?;
            master.push(m);
        }
        let grads = master.iter().map(|m| vec![0.0; m.len()]).collect();
        Ok(MasterWeights {
            engine,
            master,
            grads,
        })
    }

    /// One step from `store`; parameters without a gradient are marked in `mask` and sit
    /// out the step when `skip_missing`, and are an error otherwise.
    pub(crate) fn step(
        &mut self,
        names: &[String],
        vars: &[Var],
        store: &GradStore,
        skip_missing: bool,
        mask: &mut [bool],
    ) -> Result<StepOutcome> {
        self.take_up_outside_changes(vars)?;
        for (i, (name, v)) in names.iter().zip(vars).enumerate() {
            match store.get(v.as_tensor()) {
                Some(g) => {
                    mask[i] = false;
                    widen(g, &mut self.grads[i]).map_err(|problem| Error::Parameter {
                        name: name.clone(),
                        problem: format!("has a gradient that {problem}"),
                    })?;
                }
                None if skip_missing => mask[i] = true,
                None => return Err(Error::NoGradient { name: name.clone() }),
            }
        }
        let views: Vec<&[f32]> = self.grads.iter().map(Vec::as_slice).collect();
        let outcome = self.engine.step_with_absent(
            &views,
            mask,
            &mut Masters {
                master: &mut self.master,
            },
        )?;
        self.write_back(vars)?;
        Ok(outcome)
    }

    /// Runs `f` on the engine with the master copies as parameters, then writes them back
    /// (the schedule-free point swaps).
    pub(crate) fn with_params(
        &mut self,
        vars: &[Var],
        f: impl FnOnce(&mut dyn optim::Optimizer<f32>, &mut dyn ParamAccess<f32>) -> gradlab::Result<()>,
    ) -> Result<()> {
        self.take_up_outside_changes(vars)?;
        f(
            self.engine.as_mut(),
            &mut Masters {
                master: &mut self.master,
            },
        )?;
        self.write_back(vars)
    }

    /// Where a parameter no longer holds its master copy rounded (it was set from outside),
    /// the master copy becomes the parameter's value.
    fn take_up_outside_changes(&mut self, vars: &[Var]) -> Result<()> {
        for (v, m) in vars.iter().zip(self.master.iter_mut()) {
            read_widened(v, m, false)?;
        }
        Ok(())
    }

    fn write_back(&self, vars: &[Var]) -> Result<()> {
        for (v, m) in vars.iter().zip(&self.master) {
            v.as_tensor().inplace_op1(&WriteRounded { src: m })?;
        }
        Ok(())
    }

    /// The engine's state with the master copies (`{name}/master`).
    pub(crate) fn state_dict(&self) -> StateDict<f32> {
        let mut state = self.engine.state_dict();
        for (seg, m) in self.engine.layout().segments().iter().zip(&self.master) {
            state.tensors.insert(
                format!("{}/{MASTER}", seg.name),
                (seg.shape.clone(), m.clone()),
            );
        }
        state
    }

    /// Loads a state written by [`MasterWeights::state_dict`].
    pub(crate) fn load_state_dict(&mut self, state: &StateDict<f32>) -> gradlab::Result<()> {
        let mut engine_state = state.clone();
        let mut master = self.master.clone();
        for (seg, m) in self
            .engine
            .layout()
            .segments()
            .iter()
            .zip(master.iter_mut())
        {
            let key = format!("{}/{MASTER}", seg.name);
            match engine_state.tensors.remove(&key) {
                Some((_, values)) if values.len() == m.len() => m.copy_from_slice(&values),
                Some((shape, _)) => {
                    return Err(gradlab::Error::State {
                        source_name: None,
                        message: format!(
                            "tensor '{key}' has shape {shape:?}, the parameter {:?}",
                            seg.shape
                        ),
                    })
                }
                None => {
                    return Err(gradlab::Error::State {
                        source_name: None,
                        message: format!(
                            "tensor '{key}' (the f32 master copy of a 16-bit parameter) is missing"
                        ),
                    })
                }
            }
        }
        self.engine.load_state_dict(&engine_state)?;
        self.master = master;
        Ok(())
    }
}

/// The master copies as the engine's parameters.
struct Masters<'a> {
    master: &'a mut [Vec<f32>],
}

// SAFETY: `pointers` keeps its default (false): the master copies are lent one at a time.
unsafe impl ParamAccess<f32> for Masters<'_> {
    fn count(&self) -> usize {
        self.master.len()
    }
    fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[f32])) -> gradlab::Result<()> {
        f(&self.master[seg]);
        Ok(())
    }
    fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [f32])) -> gradlab::Result<()> {
        f(&mut self.master[seg]);
        Ok(())
    }
}

/// Copies a 16-bit variable's values, widened, into `out`: all of them (`all`), or only
/// where `out` rounded to the variable's type is not the stored value (it was set from
/// outside since it was written).
fn read_widened(v: &Var, out: &mut [f32], all: bool) -> Result<()> {
    let (storage, layout) = v.as_tensor().storage_and_layout();
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(Error::unsupported("a 16-bit parameter is not contiguous"));
    };
    match &*storage {
        Storage::Cpu(CpuStorage::BF16(values)) => {
            for (o, x) in out.iter_mut().zip(&values[start..end]) {
                if all || bf16::from_f32(*o) != *x {
                    *o = x.to_f32();
                }
            }
        }
        Storage::Cpu(CpuStorage::F16(values)) => {
            for (o, x) in out.iter_mut().zip(&values[start..end]) {
                if all || f16::from_f32(*o) != *x {
                    *o = x.to_f32();
                }
            }
        }
        _ => return Err(Error::unsupported("a 16-bit parameter changed its type")),
    }
    Ok(())
}

fn copy_widened<H: Copy + Into<f32>>(src: &[H], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = x.into();
    }
}

/// A gradient's values widened to f32 into `out`.
fn widen(g: &candle_core::Tensor, out: &mut [f32]) -> std::result::Result<(), String> {
    let (storage, layout) = g.storage_and_layout();
    let (start, end) = layout.contiguous_offsets().ok_or("is not contiguous")?;
    let Storage::Cpu(cpu) = &*storage else {
        return Err(format!("is on {:?}", g.device()));
    };
    match cpu {
        CpuStorage::BF16(v) => copy_widened(&v[start..end], out),
        CpuStorage::F16(v) => copy_widened(&v[start..end], out),
        CpuStorage::F32(v) => out.copy_from_slice(&v[start..end]),
        _ => return Err(format!("has type {:?}", g.dtype())),
    }
    Ok(())
}

/// Writes f32 values into a 16-bit parameter, rounded to nearest.
struct WriteRounded<'a> {
    src: &'a [f32],
}

impl InplaceOp1 for WriteRounded<'_> {
    fn name(&self) -> &'static str {
        "gradlab-master-write"
    }
    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("gradlab: parameter is not contiguous");
        };
        match storage {
            CpuStorage::BF16(v) => {
                for (d, &s) in v[start..end].iter_mut().zip(self.src) {
                    *d = bf16::from_f32(s);
                }
            }
            CpuStorage::F16(v) => {
                for (d, &s) in v[start..end].iter_mut().zip(self.src) {
                    *d = f16::from_f32(s);
                }
            }
            _ => candle_core::bail!("gradlab: parameter is not 16-bit"),
        }
        Ok(())
    }
}

/// Whether `dtype` is a 16-bit float type the master-weights path takes.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}
