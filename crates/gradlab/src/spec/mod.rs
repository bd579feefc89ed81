//! The spec-string grammar shared by the whole product.
//!
//! ```text
//! spec   := name [ "(" [ arg ("," arg)* ] ")" ]
//! arg    := key "=" value | value          (positional arguments come first)
//! value  := number | "true" | "false" | tuple | list | word | spec
//! tuple  := "(" value ("," value)* [","] ")"
//! list   := "[" [ value ("," value)* ] "]"
//! ```
//!
//! Examples: `adam(lr=0.001, betas=(0.9, 0.999))`, `multistep(milestones=[30, 80])`,
//! `cyclic(mode=triangular)`, `lookahead(adam(lr=0.02), k=5)`.
//!
//! A parsed [`Spec`] prints back canonically (`Display`): `name(a=1, b=(0.9, 0.999))`, and
//! parsing the printed form gives the same value again.

mod args;
mod domain;
mod parse;

pub use args::Args;
pub use domain::Domain;
pub use parse::parse;

use std::fmt;

/// A parsed spec: a name and its arguments in the order they were written.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The spec's name, e.g. `adam`.
    pub name: String,
    /// Positional arguments (key `None`) followed by keyword arguments.
    pub args: Vec<(Option<String>, Value)>,
}

/// One argument value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (all numbers are read as `f64`).
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `(a, b, ...)`.
    Tuple(Vec<Value>),
    /// `[a, b, ...]`.
    List(Vec<Value>),
    /// A bare word such as `triangular`.
    Word(String),
    /// A nested spec with arguments, such as `adam(lr=0.1)`.
    Spec(Spec),
}

impl Spec {
    /// A spec with a name and no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Spec {
            name: name.into(),
            args: Vec::new(),
        }
    }

    /// Builder: appends a keyword argument.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.args.push((Some(key.to_string()), value.into()));
        self
    }

    /// Builder: appends a positional argument.
    pub fn with_positional(mut self, value: impl Into<Value>) -> Self {
        self.args.push((None, value.into()));
        self
    }

    /// The value of keyword argument `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.args
            .iter()
            .find(|(k, _)| k.as_deref() == Some(key))
            .map(|(_, v)| v)
    }
}

impl Value {
    /// A short name of the value's kind, used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Word(_) => "a word",
            Value::Spec(_) => "a spec",
        }
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Num(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<(f64, f64)> for Value {
    fn from((a, b): (f64, f64)) -> Self {
        Value::Tuple(vec![Value::Num(a), Value::Num(b)])
    }
}

impl From<(f64, f64, f64)> for Value {
    fn from((a, b, c): (f64, f64, f64)) -> Self {
        Value::Tuple(vec![Value::Num(a), Value::Num(b), Value::Num(c)])
    }
}
impl From<Spec> for Value {
    fn from(s: Spec) -> Self {
        Value::Spec(s)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Word(s.to_string())
    }
}

/// Formats a number so that it reads back exactly: the shortest round-trip form,
/// in scientific notation for very small or very large magnitudes.
pub fn format_number(x: f64) -> String {
    if x == 0.0 {
        return "0".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if (1e-4..1e15).contains(&a) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(x) => f.write_str(&format_number(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Word(w) => f.write_str(w),
            Value::Spec(s) => write!(f, "{s}"),
            Value::Tuple(items) => {
                f.write_str("(")?;
                write_items(f, items)?;
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Value::List(items) => {
                f.write_str("[")?;
                write_items(f, items)?;
                f.write_str("]")
            }
        }
    }
}

fn write_items(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{v}")?;
    }
    Ok(())
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        f.write_str("(")?;
        for (i, (k, v)) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if let Some(k) = k {
                write!(f, "{k}={v}")?;
            } else {
                write!(f, "{v}")?;
            }
        }
        f.write_str(")")
    }
}

impl std::str::FromStr for Spec {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}
