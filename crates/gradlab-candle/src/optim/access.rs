//! How the engine reaches candle's tensors: parameters lent one at a time through candle's
//! in-place ops, gradients read straight from their storage.

use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Var};
use gradlab::optim::ParamAccess;
use std::cell::RefCell;

/// The engine's per-tensor update, lent to candle.
type Update<'a, T> = &'a mut dyn FnMut(&mut [T]);

/// Applies a closure to a tensor's storage in place.
struct InPlace<'a, T> {
    f: RefCell<Update<'a, T>>,
}

macro_rules! in_place {
    ($t:ty, $variant:ident) => {
        impl InplaceOp1 for InPlace<'_, $t> {
            fn name(&self) -> &'static str {
                "gradlab-step"
            }
            fn cpu_fwd(
                &self,
                storage: &mut CpuStorage,
                layout: &Layout,
            ) -> candle_core::Result<()> {
                let CpuStorage::$variant(values) = storage else {
                    candle_core::bail!("gradlab: parameter storage is not {}", stringify!($t));
                };
                let Some((start, end)) = layout.contiguous_offsets() else {
                    candle_core::bail!("gradlab: parameter is not contiguous");
                };
                (self.f.borrow_mut())(&mut values[start..end]);
                Ok(())
            }
        }
    };
}
in_place!(f32, F32);
in_place!(f64, F64);

/// Lends candle variables to the engine one at a time.
pub(crate) struct VarAccess<'a> {
    pub(crate) vars: &'a [Var],
}

macro_rules! var_access {
    ($t:ty, $variant:ident) => {
        // SAFETY: `pointers` keeps its default (false): candle lends a variable's storage
        // only inside `read` / `update`.
        unsafe impl ParamAccess<$t> for VarAccess<'_> {
            fn count(&self) -> usize {
                self.vars.len()
            }
            fn read(&mut self, seg: usize, f: &mut dyn FnMut(&[$t])) -> gradlab::Result<()> {
                let (storage, layout) = self.vars[seg].as_tensor().storage_and_layout();
                let Storage::Cpu(CpuStorage::$variant(values)) = &*storage else {
                    return Err(lend_error(
                        seg,
                        "is not a CPU tensor of the optimizer's float type",
                    ));
                };
                let (start, end) = layout
                    .contiguous_offsets()
                    .ok_or_else(|| lend_error(seg, "is not contiguous"))?;
                f(&values[start..end]);
                Ok(())
            }
            fn update(&mut self, seg: usize, f: &mut dyn FnMut(&mut [$t])) -> gradlab::Result<()> {
                let op = InPlace { f: RefCell::new(f) };
                self.vars[seg]
                    .as_tensor()
                    .inplace_op1(&op)
                    .map_err(|e| lend_error(seg, &e.to_string()))
            }
        }
    };
}
var_access!(f32, F32);
var_access!(f64, F64);

fn lend_error(seg: usize, what: &str) -> gradlab::Error {
    gradlab::Error::Callback(Box::new(crate::Error::Parameter {
        name: format!("#{seg}"),
        problem: what.to_string(),
    }))
}

/// The values of an f32 storage.
pub(crate) fn f32_values(s: &CpuStorage) -> Option<&[f32]> {
    match s {
        CpuStorage::F32(v) => Some(v.as_slice()),
        _ => None,
    }
}

/// The values of an f64 storage.
pub(crate) fn f64_values(s: &CpuStorage) -> Option<&[f64]> {
    match s {
        CpuStorage::F64(v) => Some(v.as_slice()),
        _ => None,
    }
}

/// Room for one step's gradient views, kept between steps so that a step allocates nothing:
/// empty between steps; [`ViewSpace::lend`] lends its allocation to a list of views that
/// live no longer than the step's borrow of the gradients.
pub(crate) struct ViewSpace<T: 'static>(Vec<&'static [T]>);

impl<T: 'static> ViewSpace<T> {
    /// Room for `n` views.
    pub(crate) fn with_capacity(n: usize) -> Self {
        ViewSpace(Vec::with_capacity(n))
    }

    /// Runs `f` with an empty list of views of lifetime `'a` in this allocation, and takes
    /// the allocation back (emptied) afterwards.
    pub(crate) fn lend<'a, R>(&mut self, f: impl FnOnce(&mut Vec<&'a [T]>) -> R) -> R {
        // `Vec` is covariant: a list of `&'static` views is a list of `&'a` ones.
        let mut views: Vec<&'a [T]> = std::mem::take(&mut self.0);
        let r = f(&mut views);
        views.clear();
        // Collecting a vector's own iterator into a vector of a type of the same size reuses
        // its allocation; the list is empty, so the closure never runs.
        self.0 = views
            .into_iter()
            .map(|_| -> &'static [T] { unreachable!("the list was cleared") })
            .collect();
        r
    }
}

/// Fills `out` with the gradient slice of every variable, in order, without copying or
/// allocating (`out` keeps its capacity between steps). A variable without a gradient gets an
/// empty slice and `true` in `absent` (when `absent` is given; otherwise it is an error).
///
/// The slices borrow the gradients' storage past the read lock, for as long as `grads` is
/// borrowed: that is sound because the gradient store keeps the tensors alive while it
/// lives, and nothing writes a gradient while the optimizer steps with it.
pub(crate) fn grad_slices<'a, T>(
    names: &[String],
    vars: &[Var],
    grads: &'a GradStore,
    extract: impl Fn(&CpuStorage) -> Option<&[T]>,
    out: &mut Vec<&'a [T]>,
    mut absent: Option<&mut [bool]>,
) -> Result<()> {
    out.clear();
    for (i, (name, v)) in names.iter().zip(vars).enumerate() {
        let Some(t) = grads.get(v.as_tensor()) else {
            match absent.as_deref_mut() {
                Some(mask) => {
                    mask[i] = true;
                    out.push(&[]);
                    continue;
                }
                None => return Err(Error::NoGradient { name: name.clone() }),
            }
        };
        if let Some(mask) = absent.as_deref_mut() {
            mask[i] = false;
        }
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Err(Error::Parameter {
                name: name.clone(),
                problem: format!("has its gradient on {:?}, not on the CPU", t.device()),
            });
        };
        let values = extract(cpu).ok_or_else(|| Error::Parameter {
            name: name.clone(),
            problem: format!(
                "has a gradient of type {:?}, another than the parameter's",
                t.dtype()
            ),
        })?;
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::Parameter {
                name: name.clone(),
                problem: "has a gradient that is not contiguous".into(),
            })?;
        let slice = &values[start..end];
        // SAFETY: see the function's documentation.
        out.push(unsafe { std::slice::from_raw_parts(slice.as_ptr(), slice.len()) });
    }
    Ok(())
}
