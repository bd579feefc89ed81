//! The strong-Wolfe line search of `lbfgs(line_search_fn=strong_wolfe)` (Nocedal & Wright,
//! Algorithms 3.5 and 3.6, as torch's `_strong_wolfe` and `_cubic_interpolate`).

use super::{dot, max_abs, Lbfgs, Target, Work};
use crate::optim::{Closure, ParamAccess};
use crate::{Real, Result};

/// The minimiser of the cubic through two points with their slopes, within `bounds`
/// (torch's `_cubic_interpolate`).
fn cubic(x1: f64, f1: f64, g1: f64, x2: f64, f2: f64, g2: f64, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

impl<T: Real> Lbfgs<T> {
    /// The step length along `d` from `x_init` that satisfies the strong Wolfe conditions
    /// (torch's `_strong_wolfe`: c1 = 1e-4, c2 = 0.9, tolerance 1e-9, at most `max_ls`
    /// evaluations): the loss there, the step, and the evaluations it took; its gradient is
    /// left in `work.flat_grad`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn strong_wolfe(
        &mut self,
        params: &mut dyn ParamAccess<T>,
        closure: &mut Closure<'_, T>,
        x_init: &[T],
        f: f64,
        gtd: f64,
        max_ls: u64,
    ) -> Result<(f64, f64, u64)> {
        const C1: f64 = 1e-4;
        const C2: f64 = 0.9;
        const TOLERANCE_CHANGE: f64 = 1e-9;
        let d_norm = max_abs(&self.memory.d);
        let mut evals = 0;
        // The loss and slope at x_init + t·d; its gradient goes to work.g_new.
        let mut trial = |me: &mut Self, t: f64| -> Result<(f64, f64)> {
            Self::write_moved(params, &me.layout, x_init, t, &me.memory.d)?;
            let f_new = me.evaluate(params, closure, Target::LineSearch)?;
            evals += 1;
            Ok((f_new, dot(&me.work.g_new, &me.memory.d)))
        };
        let mut t = self.memory.t;
        let (mut f_new, mut gtd_new) = trial(self, t)?;
        let (mut t_prev, mut f_prev, mut gtd_prev) = (0.0, f, gtd);
        self.work.g_prev.copy_from_slice(&self.work.flat_grad);
        // The bracket's ends (one when the first phase already satisfies the conditions),
        // their losses and slopes; their gradients are work.bracket_g.
        let mut bracket = [0.0f64; 2];
        let mut bracket_f = [0.0f64; 2];
        let mut bracket_gtd = [0.0f64; 2];
        let mut ends = 2;
        let mut done = false;
        let mut ls_iter = 0;
        let mut found = false;
        while ls_iter < max_ls {
            let armijo_fails = f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= f_prev);
            if !armijo_fails && gtd_new.abs() <= -C2 * gtd {
                bracket[0] = t;
                bracket_f[0] = f_new;
                self.work.bracket_g[0].copy_from_slice(&self.work.g_new);
                ends = 1;
                done = true;
                found = true;
                break;
            }
            if armijo_fails || gtd_new >= 0.0 {
                bracket = [t_prev, t];
                bracket_f = [f_prev, f_new];
                bracket_gtd = [gtd_prev, gtd_new];
                self.work.bracket_g[0].copy_from_slice(&self.work.g_prev);
                self.work.bracket_g[1].copy_from_slice(&self.work.g_new);
                found = true;
                break;
            }
            let bounds = (t + 0.01 * (t - t_prev), t * 10.0);
            let tmp = t;
            t = cubic(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, Some(bounds));
            t_prev = tmp;
            f_prev = f_new;
            self.work.g_prev.copy_from_slice(&self.work.g_new);
            gtd_prev = gtd_new;
            (f_new, gtd_new) = trial(self, t)?;
            ls_iter += 1;
        }
        if !found {
            // Out of evaluations: the bracket [0, t] (no zoom follows, so no slopes needed).
            bracket = [0.0, t];
            bracket_f = [f, f_new];
            self.work.bracket_g[0].copy_from_slice(&self.work.flat_grad);
            self.work.bracket_g[1].copy_from_slice(&self.work.g_new);
        }
        let order = |bf: &[f64; 2], last: usize| if bf[0] <= bf[last] { (0, 1) } else { (1, 0) };
        let (mut low, mut high) = order(&bracket_f, ends - 1);
        let mut insuf_progress = false;
        while !done && ls_iter < max_ls {
            if (bracket[1] - bracket[0]).abs() * d_norm < TOLERANCE_CHANGE {
                break;
            }
            t = cubic(
                bracket[0],
                bracket_f[0],
                bracket_gtd[0],
                bracket[1],
                bracket_f[1],
                bracket_gtd[1],
                None,
            );
            let (b_max, b_min) = (bracket[0].max(bracket[1]), bracket[0].min(bracket[1]));
            let eps = 0.1 * (b_max - b_min);
            if (b_max - t).min(t - b_min) < eps {
                if insuf_progress || t >= b_max || t <= b_min {
                    t = if (t - b_max).abs() < (t - b_min).abs() {
                        b_max - eps
                    } else {
                        b_min + eps
                    };
                    insuf_progress = false;
                } else {
                    insuf_progress = true;
                }
            } else {
                insuf_progress = false;
            }
            (f_new, gtd_new) = trial(self, t)?;
            ls_iter += 1;
            if f_new > f + C1 * t * gtd || f_new >= bracket_f[low] {
                bracket[high] = t;
                bracket_f[high] = f_new;
                bracket_gtd[high] = gtd_new;
                self.work.bracket_g[high].copy_from_slice(&self.work.g_new);
                (low, high) = order(&bracket_f, 1);
            } else {
                if gtd_new.abs() <= -C2 * gtd {
                    done = true;
                } else if gtd_new * (bracket[high] - bracket[low]) >= 0.0 {
                    bracket[high] = bracket[low];
                    bracket_f[high] = bracket_f[low];
                    bracket_gtd[high] = bracket_gtd[low];
                    let [a, b] = &mut self.work.bracket_g;
                    if high == 0 {
                        a.copy_from_slice(b);
                    } else {
                        b.copy_from_slice(a);
                    }
                }
                bracket[low] = t;
                bracket_f[low] = f_new;
                bracket_gtd[low] = gtd_new;
                self.work.bracket_g[low].copy_from_slice(&self.work.g_new);
            }
        }
        let Work {
            flat_grad,
            bracket_g,
            ..
        } = &mut self.work;
        flat_grad.copy_from_slice(&bracket_g[low]);
        Ok((bracket_f[low], bracket[low], evals))
    }
}
