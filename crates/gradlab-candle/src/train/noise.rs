//! Gradient noise (Neelakantan et al. 2015) and the per-step random streams it draws from:
//! every draw is a function of (seed, step), so a resumed or data-parallel run adds the same
//! numbers as one uninterrupted process.

use crate::optim::GradlabOptimizer;
use crate::Result;
use candle_core::Tensor;
use gradlab::landscape::Rng;

/// Gradient noise of step `step`: one stream of N(0, std²) draws over the flat parameter
/// space in sorted-name order, added to `g` from flat position `start` on (the same numbers
/// whether one process or a rank of many adds them).
pub(super) fn add_noise(seed: u64, step: u64, std: f64, start: usize, g: &mut [f32]) {
    let mut rng = step_rng(seed ^ 0x6E6F_6973_6500, step);
    for _ in 0..start {
        rng.normal();
    }
    for x in g {
        *x += (rng.normal() * std) as f32;
    }
}

pub(crate) fn step_rng(seed: u64, step: u64) -> Rng {
    Rng::new(
        seed.wrapping_mul(0x9E37_79B9)
            .wrapping_add(step.wrapping_mul(0xD1B5_4A32_D192_ED03)),
    )
}

/// Adds the step's gradient noise to a single process's gradients, tensor by tensor in the
/// optimizer's (sorted-name) order: the stream [`add_noise`] draws.
pub(super) fn add_noise_to_store(
    opt: &GradlabOptimizer,
    grads: &mut candle_core::backprop::GradStore,
    seed: u64,
    step: u64,
    std: f64,
) -> Result<()> {
    let mut flat_noise = Vec::new();
    for v in opt.vars() {
        flat_noise.resize(flat_noise.len() + v.elem_count(), 0.0f32);
    }
    add_noise(seed, step, std, 0, &mut flat_noise);
    let mut offset = 0;
    for v in opt.vars() {
        let n = v.elem_count();
        if let Some(g) = grads.get(v.as_tensor()) {
            let noise = Tensor::from_slice(&flat_noise[offset..offset + n], g.shape(), g.device())?;
            let noisy = (g + noise)?;
            grads.insert(v.as_tensor(), noisy);
        }
        offset += n;
    }
    Ok(())
}
