//! Analytic test surfaces of two variables with exact value, gradient and Hessian (`f64`).
//!
//! | name | f(x, y) | critical points of note |
//! |---|---|---|
//! | `rosenbrock` | (1 − x)² + 100(y − x²)² | minimum (1, 1) in a curved valley |
//! | `beale` | (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)² | minimum (3, 0.5) |
//! | `himmelblau` | (x² + y − 11)² + (x + y² − 7)² | four minima, one maximum, four saddles |
//! | `booth` | (x + 2y − 7)² + (2x + y − 5)² | minimum (1, 3) |
//! | `product` | (1 − xy)² | saddle at the origin (eigenvalues ±2) |
//! | `monkey` | x³ − 3xy² | degenerate saddle at the origin |
//! | `bowl` | 0.05x² + 5y² | convex, condition number 100 |
//! | `rastrigin` | 20 + x² − 10cos 2πx + y² − 10cos 2πy | many local minima, global at 0 |
//!
//! Any other f(x, y) can be typed ([`expression::Expression`]); optimizers, schedules and the
//! Hessian tools take either through [`SurfaceFunction`].

pub mod critical_points;
pub mod expression;
pub mod quadratic;
pub mod replay;

/// A function of two variables with exact value, gradient and Hessian: a built-in
/// [`Surface`] or a typed [`expression::Expression`].
pub trait SurfaceFunction {
    /// f(x, y).
    fn value(&self, x: f64, y: f64) -> f64;
    /// ∇f(x, y).
    fn gradient(&self, x: f64, y: f64) -> [f64; 2];
    /// The Hessian `[[f_xx, f_xy], [f_xy, f_yy]]`.
    fn hessian(&self, x: f64, y: f64) -> [[f64; 2]; 2];
}

impl<F: SurfaceFunction + ?Sized> SurfaceFunction for &F {
    fn value(&self, x: f64, y: f64) -> f64 {
        (**self).value(x, y)
    }
    fn gradient(&self, x: f64, y: f64) -> [f64; 2] {
        (**self).gradient(x, y)
    }
    fn hessian(&self, x: f64, y: f64) -> [[f64; 2]; 2] {
        (**self).hessian(x, y)
    }
}

/// A surface given by name ([`Surface`]) or typed ([`expression::Expression`]).
#[derive(Debug, Clone)]
pub enum Function {
    /// A built-in surface.
    Builtin(Surface),
    /// A typed expression in x and y.
    Typed(expression::Expression),
}

impl Function {
    /// The built-in surface `name` or, when `name` is `None`, the typed `expression`; one of
    /// the two must be given.
    pub fn from_name_or_expression(name: Option<&str>, expression: Option<&str>) -> Result<Self> {
        match (name, expression) {
            (Some(n), None) => Ok(Function::Builtin(n.parse()?)),
            (None, Some(e)) => Ok(Function::Typed(expression::Expression::parse(e)?)),
            (Some(_), Some(_)) => Err(Error::Unsupported {
                what: "a surface".into(),
                reason: "give a built-in function or an expression, not both".into(),
            }),
            (None, None) => Err(Error::Unsupported {
                what: "a surface".into(),
                reason: format!(
                    "give a function (one of {}) or an expression in x and y",
                    ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// The built-in's name, or the expression as typed.
    pub fn label(&self) -> &str {
        match self {
            Function::Builtin(s) => s.name(),
            Function::Typed(e) => e.text(),
        }
    }

    /// A box `[xmin, xmax, ymin, ymax]` to show it in: the built-in's, or [−3, 3]².
    pub fn default_box(&self) -> [f64; 4] {
        match self {
            Function::Builtin(s) => s.default_box(),
            Function::Typed(_) => [-3.0, 3.0, -3.0, 3.0],
        }
    }
}

impl SurfaceFunction for Function {
    fn value(&self, x: f64, y: f64) -> f64 {
        match self {
            Function::Builtin(s) => s.value(x, y),
            Function::Typed(e) => e.value(x, y),
        }
    }
    fn gradient(&self, x: f64, y: f64) -> [f64; 2] {
        match self {
            Function::Builtin(s) => s.gradient(x, y),
            Function::Typed(e) => e.gradient(x, y),
        }
    }
    fn hessian(&self, x: f64, y: f64) -> [[f64; 2]; 2] {
        match self {
            Function::Builtin(s) => s.hessian(x, y),
            Function::Typed(e) => e.hessian(x, y),
        }
    }
}

impl SurfaceFunction for Surface {
    fn value(&self, x: f64, y: f64) -> f64 {
        Surface::value(*self, x, y)
    }
    fn gradient(&self, x: f64, y: f64) -> [f64; 2] {
        Surface::gradient(*self, x, y)
    }
    fn hessian(&self, x: f64, y: f64) -> [[f64; 2]; 2] {
        Surface::hessian(*self, x, y)
    }
}

use crate::{Error, Result};
use std::f64::consts::PI;

/// One of the analytic surfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// (1 − x)² + 100(y − x²)².
    Rosenbrock,
    /// (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)².
    Beale,
    /// (x² + y − 11)² + (x + y² − 7)².
    Himmelblau,
    /// (x + 2y − 7)² + (2x + y − 5)².
    Booth,
    /// (1 − xy)².
    Product,
    /// x³ − 3xy².
    Monkey,
    /// 0.05x² + 5y².
    Bowl,
    /// 20 + x² − 10cos(2πx) + y² − 10cos(2πy).
    Rastrigin,
}

/// Every surface, in the order of the table above.
pub const ALL: [Surface; 8] = [
    Surface::Rosenbrock,
    Surface::Beale,
    Surface::Himmelblau,
    Surface::Booth,
    Surface::Product,
    Surface::Monkey,
    Surface::Bowl,
    Surface::Rastrigin,
];

impl std::str::FromStr for Surface {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ALL.iter()
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| Error::UnknownName {
                what: "function",
                name: s.to_string(),
                spec: s.to_string(),
                known: ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "),
            })
    }
}

impl Surface {
    /// The surface's name.
    pub fn name(self) -> &'static str {
        match self {
            Surface::Rosenbrock => "rosenbrock",
            Surface::Beale => "beale",
            Surface::Himmelblau => "himmelblau",
            Surface::Booth => "booth",
            Surface::Product => "product",
            Surface::Monkey => "monkey",
            Surface::Bowl => "bowl",
            Surface::Rastrigin => "rastrigin",
        }
    }

    /// The formula, as in the table above.
    pub fn formula(self) -> &'static str {
        match self {
            Surface::Rosenbrock => "(1 − x)² + 100(y − x²)²",
            Surface::Beale => "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
            Surface::Himmelblau => "(x² + y − 11)² + (x + y² − 7)²",
            Surface::Booth => "(x + 2y − 7)² + (2x + y − 5)²",
            Surface::Product => "(1 − xy)²",
            Surface::Monkey => "x³ − 3xy²",
            Surface::Bowl => "0.05x² + 5y²",
            Surface::Rastrigin => "20 + x² − 10cos 2πx + y² − 10cos 2πy",
        }
    }

    /// f(x, y).
    pub fn value(self, x: f64, y: f64) -> f64 {
        match self {
            Surface::Rosenbrock => (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2),
            Surface::Beale => {
                (1.5 - x + x * y).powi(2)
                    + (2.25 - x + x * y * y).powi(2)
                    + (2.625 - x + x * y.powi(3)).powi(2)
            }
            Surface::Himmelblau => (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2),
            Surface::Booth => (x + 2.0 * y - 7.0).powi(2) + (2.0 * x + y - 5.0).powi(2),
            Surface::Product => (1.0 - x * y).powi(2),
            Surface::Monkey => x.powi(3) - 3.0 * x * y * y,
            Surface::Bowl => 0.05 * x * x + 5.0 * y * y,
            Surface::Rastrigin => {
                20.0 + x * x - 10.0 * (2.0 * PI * x).cos() + y * y - 10.0 * (2.0 * PI * y).cos()
            }
        }
    }

    /// ∇f(x, y).
    pub fn gradient(self, x: f64, y: f64) -> [f64; 2] {
        match self {
            Surface::Rosenbrock => [
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            ],
            Surface::Beale => {
                let (a, b, c) = beale_terms(x, y);
                [
                    2.0 * a * (y - 1.0) + 2.0 * b * (y * y - 1.0) + 2.0 * c * (y.powi(3) - 1.0),
                    2.0 * a * x + 2.0 * b * 2.0 * x * y + 2.0 * c * 3.0 * x * y * y,
                ]
            }
            Surface::Himmelblau => {
                let (a, b) = (x * x + y - 11.0, x + y * y - 7.0);
                [4.0 * x * a + 2.0 * b, 2.0 * a + 4.0 * y * b]
            }
            Surface::Booth => {
                let (a, b) = (x + 2.0 * y - 7.0, 2.0 * x + y - 5.0);
                [2.0 * a + 4.0 * b, 4.0 * a + 2.0 * b]
            }
            Surface::Product => {
                let r = 1.0 - x * y;
                [-2.0 * y * r, -2.0 * x * r]
            }
            Surface::Monkey => [3.0 * x * x - 3.0 * y * y, -6.0 * x * y],
            Surface::Bowl => [0.1 * x, 10.0 * y],
            Surface::Rastrigin => [
                2.0 * x + 20.0 * PI * (2.0 * PI * x).sin(),
                2.0 * y + 20.0 * PI * (2.0 * PI * y).sin(),
            ],
        }
    }

    /// The Hessian `[[f_xx, f_xy], [f_xy, f_yy]]`.
    pub fn hessian(self, x: f64, y: f64) -> [[f64; 2]; 2] {
        let (xx, xy, yy) = match self {
            Surface::Rosenbrock => (2.0 - 400.0 * (y - x * x) + 800.0 * x * x, -400.0 * x, 200.0),
            Surface::Beale => {
                let (a, b, c) = beale_terms(x, y);
                let (ax, ay) = (y - 1.0, x);
                let (bx, by) = (y * y - 1.0, 2.0 * x * y);
                let (cx, cy) = (y.powi(3) - 1.0, 3.0 * x * y * y);
                (
                    2.0 * (ax * ax + bx * bx + cx * cx),
                    2.0 * (ax * ay + bx * by + cx * cy) + 2.0 * (a + b * 2.0 * y + c * 3.0 * y * y),
                    2.0 * (ay * ay + by * by + cy * cy) + 2.0 * (b * 2.0 * x + c * 6.0 * x * y),
                )
            }
            Surface::Himmelblau => {
                let (a, b) = (x * x + y - 11.0, x + y * y - 7.0);
                (
                    4.0 * a + 8.0 * x * x + 2.0,
                    4.0 * x + 4.0 * y,
                    2.0 + 4.0 * b + 8.0 * y * y,
                )
            }
            Surface::Booth => (10.0, 8.0, 10.0),
            Surface::Product => (2.0 * y * y, -2.0 + 4.0 * x * y, 2.0 * x * x),
            Surface::Monkey => (6.0 * x, -6.0 * y, -6.0 * x),
            Surface::Bowl => (0.1, 0.0, 10.0),
            Surface::Rastrigin => (
                2.0 + 40.0 * PI * PI * (2.0 * PI * x).cos(),
                0.0,
                2.0 + 40.0 * PI * PI * (2.0 * PI * y).cos(),
            ),
        };
        [[xx, xy], [xy, yy]]
    }

    /// Global minima (empty where the surface is unbounded below).
    pub fn minima(self) -> Vec<[f64; 2]> {
        match self {
            Surface::Rosenbrock => vec![[1.0, 1.0]],
            Surface::Beale => vec![[3.0, 0.5]],
            Surface::Himmelblau => vec![
                [3.0, 2.0],
                [-2.805118, 3.131312],
                [-3.779310, -3.283186],
                [3.584428, -1.848126],
            ],
            Surface::Booth => vec![[1.0, 3.0]],
            Surface::Product => Vec::new(),
            Surface::Monkey => Vec::new(),
            Surface::Bowl => vec![[0.0, 0.0]],
            Surface::Rastrigin => vec![[0.0, 0.0]],
        }
    }

    /// A plotting box `[xmin, xmax, ymin, ymax]` showing the surface's features.
    pub fn default_box(self) -> [f64; 4] {
        match self {
            Surface::Rosenbrock => [-2.0, 2.0, -1.0, 3.0],
            Surface::Beale => [-4.5, 4.5, -4.5, 4.5],
            Surface::Himmelblau => [-5.0, 5.0, -5.0, 5.0],
            Surface::Booth => [-10.0, 10.0, -10.0, 10.0],
            Surface::Product => [-2.0, 2.0, -2.0, 2.0],
            Surface::Monkey => [-2.0, 2.0, -2.0, 2.0],
            Surface::Bowl => [-10.0, 10.0, -2.0, 2.0],
            Surface::Rastrigin => [-5.12, 5.12, -5.12, 5.12],
        }
    }
}

fn beale_terms(x: f64, y: f64) -> (f64, f64, f64) {
    (
        1.5 - x + x * y,
        2.25 - x + x * y * y,
        2.625 - x + x * y.powi(3),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-5;
        for f in ALL {
            for &(x, y) in &[(0.3, -0.7), (-1.2, 0.9), (1.1, 1.3)] {
                let g = f.gradient(x, y);
                let fd = [
                    (f.value(x + h, y) - f.value(x - h, y)) / (2.0 * h),
                    (f.value(x, y + h) - f.value(x, y - h)) / (2.0 * h),
                ];
                let hs = f.hessian(x, y);
                let gx = |x: f64, y: f64| f.gradient(x, y);
                let hfd = [
                    [
                        (gx(x + h, y)[0] - gx(x - h, y)[0]) / (2.0 * h),
                        (gx(x, y + h)[0] - gx(x, y - h)[0]) / (2.0 * h),
                    ],
                    [
                        (gx(x + h, y)[1] - gx(x - h, y)[1]) / (2.0 * h),
                        (gx(x, y + h)[1] - gx(x, y - h)[1]) / (2.0 * h),
                    ],
                ];
                for i in 0..2 {
                    assert!(
                        (g[i] - fd[i]).abs() <= 1e-5 * (1.0 + fd[i].abs()),
                        "{f:?} grad {i}"
                    );
                    for j in 0..2 {
                        assert!(
                            (hs[i][j] - hfd[i][j]).abs() <= 1e-4 * (1.0 + hfd[i][j].abs()),
                            "{f:?} hess {i}{j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn minima_are_stationary() {
        for f in ALL {
            for m in f.minima() {
                let g = f.gradient(m[0], m[1]);
                assert!(g[0].hypot(g[1]) < 1e-4, "{f:?} at {m:?}: {g:?}");
            }
        }
    }
}
