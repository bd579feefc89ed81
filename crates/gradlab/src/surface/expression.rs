//! Surfaces typed as an expression in `x` and `y`, such as `(1 - x)^2 + 100*(y - x^2)^2`,
//! with exact value, gradient and Hessian.
//!
//! The text is parsed by `evalexpr` (precedence, numbers, errors); gradlab then checks the
//! tree (only `x`, `y`, `pi`, `e`, the arithmetic operators and the functions of
//! [`FUNCTIONS`]) and evaluates it in second-order forward mode: every node carries its value,
//! its two first derivatives and its three second derivatives ([`Jet`]), so the derivatives
//! are exact to rounding, not finite differences.

use super::SurfaceFunction;
use crate::{Error, Result};
use evalexpr::{DefaultNumericTypes, Node, Operator, Value};

/// The longest expression accepted, in bytes.
pub const MAX_LEN: usize = 500;

/// Functions an expression may call (one argument each; `log` is the natural logarithm).
pub const FUNCTIONS: &[&str] = &[
    "sin", "cos", "tan", "exp", "ln", "log", "sqrt", "abs", "tanh", "sinh", "cosh", "atan",
];

/// A parsed, checked expression f(x, y).
#[derive(Debug, Clone)]
pub struct Expression {
    text: String,
    tree: Node<DefaultNumericTypes>,
}

/// A value with its gradient and Hessian with respect to (x, y): second-order forward mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jet {
    /// f.
    pub value: f64,
    /// (f_x, f_y).
    pub gradient: [f64; 2],
    /// (f_xx, f_xy, f_yy).
    pub hessian: [f64; 3],
}

impl Jet {
    fn constant(value: f64) -> Self {
        Jet {
            value,
            gradient: [0.0; 2],
            hessian: [0.0; 3],
        }
    }

    fn variable(value: f64, index: usize) -> Self {
        let mut j = Jet::constant(value);
        j.gradient[index] = 1.0;
        j
    }

    fn is_constant(&self) -> bool {
        self.gradient == [0.0; 2] && self.hessian == [0.0; 3]
    }

    /// g(self) given g, g′ and g″ at the value (the chain rule to second order).
    fn chain(self, g0: f64, g1: f64, g2: f64) -> Self {
        let [a, b] = self.gradient;
        let [aa, ab, bb] = self.hessian;
        Jet {
            value: g0,
            gradient: [g1 * a, g1 * b],
            hessian: [
                g2 * a * a + g1 * aa,
                g2 * a * b + g1 * ab,
                g2 * b * b + g1 * bb,
            ],
        }
    }

    fn add(self, o: Jet, sign: f64) -> Self {
        Jet {
            value: self.value + sign * o.value,
            gradient: [
                self.gradient[0] + sign * o.gradient[0],
                self.gradient[1] + sign * o.gradient[1],
            ],
            hessian: [
                self.hessian[0] + sign * o.hessian[0],
                self.hessian[1] + sign * o.hessian[1],
                self.hessian[2] + sign * o.hessian[2],
            ],
        }
    }

    fn mul(self, o: Jet) -> Self {
        let (u, v) = (self, o);
        let [ux, uy] = u.gradient;
        let [vx, vy] = v.gradient;
        Jet {
            value: u.value * v.value,
            gradient: [ux * v.value + u.value * vx, uy * v.value + u.value * vy],
            hessian: [
                u.hessian[0] * v.value + 2.0 * ux * vx + u.value * v.hessian[0],
                u.hessian[1] * v.value + ux * vy + uy * vx + u.value * v.hessian[1],
                u.hessian[2] * v.value + 2.0 * uy * vy + u.value * v.hessian[2],
            ],
        }
    }

    fn recip(self) -> Self {
        let v = self.value;
        self.chain(1.0 / v, -1.0 / (v * v), 2.0 / (v * v * v))
    }

    fn powf(self, p: Jet) -> Self {
        if p.is_constant() {
            let (c, v) = (p.value, self.value);
            if c == 0.0 {
                return Jet::constant(1.0);
            }
            let g1 = if c == 1.0 { 1.0 } else { c * v.powf(c - 1.0) };
            let g2 = match c {
                1.0 => 0.0,
                2.0 => 2.0,
                _ => c * (c - 1.0) * v.powf(c - 2.0),
            };
            return self.chain(v.powf(c), g1, g2);
        }
        // a^b = exp(b ln a) for a variable exponent.
        let ln = self.chain(
            self.value.ln(),
            1.0 / self.value,
            -1.0 / (self.value * self.value),
        );
        let e = p.mul(ln);
        let x = e.value.exp();
        e.chain(x, x, x)
    }

    fn apply(self, function: &str) -> Self {
        let v = self.value;
        match function {
            "sin" => self.chain(v.sin(), v.cos(), -v.sin()),
            "cos" => self.chain(v.cos(), -v.sin(), -v.cos()),
            "tan" => {
                let (t, s) = (v.tan(), 1.0 / v.cos().powi(2));
                self.chain(t, s, 2.0 * s * t)
            }
            "exp" => self.chain(v.exp(), v.exp(), v.exp()),
            "ln" | "log" => self.chain(v.ln(), 1.0 / v, -1.0 / (v * v)),
            "sqrt" => {
                let r = v.sqrt();
                self.chain(r, 0.5 / r, -0.25 / (r * v))
            }
            // The derivative of |v| at 0 is taken as 0 (a subgradient).
            "abs" => self.chain(v.abs(), if v == 0.0 { 0.0 } else { v.signum() }, 0.0),
            "tanh" => {
                let t = v.tanh();
                let s = 1.0 - t * t;
                self.chain(t, s, -2.0 * t * s)
            }
            "sinh" => self.chain(v.sinh(), v.cosh(), v.sinh()),
            "cosh" => self.chain(v.cosh(), v.sinh(), v.cosh()),
            "atan" => {
                let d = 1.0 / (1.0 + v * v);
                self.chain(v.atan(), d, -2.0 * v * d * d)
            }
            _ => unreachable!("function names are checked at parse time"),
        }
    }
}

impl Expression {
    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<Self> {
        let fail = |message: String| Error::Expression {
            expression: text.to_string(),
            message,
        };
        if text.len() > MAX_LEN {
            return Err(fail(format!(
                "{} characters; at most {MAX_LEN} are accepted",
                text.len()
            )));
        }
        if text.trim().is_empty() {
            return Err(fail(
                "it is empty: type a function of x and y, such as x^2 + 3*y^2".into(),
            ));
        }
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(text)
            .map_err(|e| fail(e.to_string()))?;
        check(&tree).map_err(fail)?;
        Ok(Expression {
            text: text.to_string(),
            tree,
        })
    }

    /// The text as typed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// f, ∇f and the Hessian at (x, y).
    pub fn jet(&self, x: f64, y: f64) -> Jet {
        eval(&self.tree, x, y)
    }
}

/// Refuses what [`eval`] cannot differentiate, naming it.
fn check(node: &Node<DefaultNumericTypes>) -> std::result::Result<(), String> {
    let children = node.children();
    let arity = |n: usize, what: &str| {
        if children.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{what} takes {n} operand(s), got {}",
                children.len()
            ))
        }
    };
    match node.operator() {
        Operator::RootNode => {
            if children.is_empty() {
                return Err("it is empty: type a function of x and y".into());
            }
            arity(1, "the expression")?;
        }
        Operator::Add | Operator::Sub | Operator::Mul | Operator::Div | Operator::Exp => {
            arity(2, "an arithmetic operator")?
        }
        Operator::Neg => arity(1, "minus")?,
        Operator::Const { value } => match value {
            Value::Float(_) | Value::Int(_) => {}
            other => return Err(format!("'{other}' is not a number")),
        },
        Operator::VariableIdentifierRead { identifier } => match identifier.as_str() {
            "x" | "y" | "pi" | "e" => {}
            other => {
                return Err(format!(
                    "unknown variable '{other}': the variables are x and y (constants pi and e)"
                ))
            }
        },
        Operator::FunctionIdentifier { identifier } => {
            let name = identifier.strip_prefix("math::").unwrap_or(identifier);
            if !FUNCTIONS.contains(&name) {
                return Err(format!(
                    "unknown function '{identifier}'; known: {}",
                    FUNCTIONS.join(", ")
                ));
            }
            if children.len() != 1 || matches!(children[0].operator(), Operator::Tuple) {
                return Err(format!("{name} takes one argument"));
            }
        }
        Operator::Mod => return Err("'%' is not differentiable: use other operators".into()),
        Operator::Tuple => {
            return Err(
                "',' makes a tuple: a function takes one argument, and f(x, y) is one number"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "'{other}' is not arithmetic: use + - * / ^, parentheses and functions of x and y"
            ))
        }
    }
    children.iter().try_for_each(check)
}

/// Evaluates a checked tree at (x, y).
fn eval(node: &Node<DefaultNumericTypes>, x: f64, y: f64) -> Jet {
    let c = node.children();
    let arg = |i: usize| eval(&c[i], x, y);
    match node.operator() {
        Operator::RootNode => arg(0),
        Operator::Add => arg(0).add(arg(1), 1.0),
        Operator::Sub => arg(0).add(arg(1), -1.0),
        Operator::Neg => Jet::constant(0.0).add(arg(0), -1.0),
        Operator::Mul => arg(0).mul(arg(1)),
        Operator::Div => arg(0).mul(arg(1).recip()),
        Operator::Exp => arg(0).powf(arg(1)),
        Operator::Const { value } => Jet::constant(match value {
            Value::Float(f) => *f,
            Value::Int(i) => *i as f64,
            _ => unreachable!("checked"),
        }),
        Operator::VariableIdentifierRead { identifier } => match identifier.as_str() {
            "x" => Jet::variable(x, 0),
            "y" => Jet::variable(y, 1),
            "pi" => Jet::constant(std::f64::consts::PI),
            _ => Jet::constant(std::f64::consts::E),
        },
        Operator::FunctionIdentifier { identifier } => {
            arg(0).apply(identifier.strip_prefix("math::").unwrap_or(identifier))
        }
        _ => unreachable!("checked"),
    }
}

impl SurfaceFunction for Expression {
    fn value(&self, x: f64, y: f64) -> f64 {
        self.jet(x, y).value
    }
    fn gradient(&self, x: f64, y: f64) -> [f64; 2] {
        self.jet(x, y).gradient
    }
    fn hessian(&self, x: f64, y: f64) -> [[f64; 2]; 2] {
        let [xx, xy, yy] = self.jet(x, y).hessian;
        [[xx, xy], [xy, yy]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surface::{Surface, ALL};

    /// Each built-in surface typed as an expression has the built-in's derivatives.
    #[test]
    fn typed_surfaces_match_the_built_in_ones() {
        let typed = [
            (Surface::Rosenbrock, "(1 - x)^2 + 100*(y - x^2)^2"),
            (
                Surface::Beale,
                "(1.5 - x + x*y)^2 + (2.25 - x + x*y^2)^2 + (2.625 - x + x*y^3)^2",
            ),
            (Surface::Himmelblau, "(x^2 + y - 11)^2 + (x + y^2 - 7)^2"),
            (Surface::Booth, "(x + 2*y - 7)^2 + (2*x + y - 5)^2"),
            (Surface::Product, "(1 - x*y)^2"),
            (Surface::Monkey, "x^3 - 3*x*y^2"),
            (Surface::Bowl, "0.05*x^2 + 5*y^2"),
            (
                Surface::Rastrigin,
                "20 + x^2 - 10*cos(2*pi*x) + y^2 - 10*math::cos(2*pi*y)",
            ),
        ];
        assert_eq!(typed.len(), ALL.len());
        for (surface, text) in typed {
            let e = Expression::parse(text).unwrap();
            for &(x, y) in &[(0.3, -0.7), (-1.2, 0.9), (1.1, 1.3), (0.0, 0.0)] {
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
                assert!(close(e.value(x, y), surface.value(x, y)), "{text}");
                let (g, h) = (e.gradient(x, y), e.hessian(x, y));
                let (gs, hs) = (surface.gradient(x, y), surface.hessian(x, y));
                for i in 0..2 {
                    assert!(close(g[i], gs[i]), "{text} gradient {i} at {x},{y}");
                    for j in 0..2 {
                        assert!(close(h[i][j], hs[i][j]), "{text} hessian {i}{j} at {x},{y}");
                    }
                }
            }
        }
    }

    /// Every function and operator against central differences of the value.
    #[test]
    fn derivatives_of_every_function_match_finite_differences() {
        let mut texts: Vec<String> = FUNCTIONS
            .iter()
            .map(|f| format!("{f}(0.3*x + 0.2*y^2 + 0.9) * (y - x)"))
            .collect();
        texts.push("x^y + y/x - (x*y)^-1.5".into());
        texts.push("-x^2 + e^(x*y) / (1 + x^2)".into());
        let (x, y, h) = (0.7, 0.4, 1e-4);
        for text in &texts {
            let e = Expression::parse(text).unwrap();
            let f = |x: f64, y: f64| e.value(x, y);
            let g = e.gradient(x, y);
            let fd = [
                (f(x + h, y) - f(x - h, y)) / (2.0 * h),
                (f(x, y + h) - f(x, y - h)) / (2.0 * h),
            ];
            let hs = e.hessian(x, y);
            let gx = |x: f64, y: f64| e.gradient(x, y);
            let hfd = [
                (gx(x + h, y)[0] - gx(x - h, y)[0]) / (2.0 * h),
                (gx(x, y + h)[0] - gx(x, y - h)[0]) / (2.0 * h),
                (gx(x, y + h)[1] - gx(x, y - h)[1]) / (2.0 * h),
            ];
            for i in 0..2 {
                assert!(
                    (g[i] - fd[i]).abs() <= 1e-6 * (1.0 + fd[i].abs()),
                    "{text}: {g:?} {fd:?}"
                );
            }
            let got = [hs[0][0], hs[0][1], hs[1][1]];
            for i in 0..3 {
                assert!(
                    (got[i] - hfd[i]).abs() <= 1e-6 * (1.0 + hfd[i].abs()),
                    "{text}: {got:?} {hfd:?}"
                );
            }
        }
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for (text, says) in [
            ("x^2 +", "invalid expression"),
            ("z + x", "unknown variable 'z'"),
            ("foo(x)", "unknown function 'foo'"),
            ("x % 2", "not differentiable"),
            ("x = 3", "not arithmetic"),
            ("", "empty"),
            ("x > y", "not arithmetic"),
            ("\"a\" + x", "not a number"),
            ("sin(x, y)", "one argument"),
            ("x, y", "one argument"),
        ] {
            let err = Expression::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        let long = "x+".repeat(MAX_LEN) + "x";
        let err = Expression::parse(&long).unwrap_err().to_string();
        assert!(err.contains("at most 500"), "{err}");
    }
}
