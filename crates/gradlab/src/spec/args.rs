//! Typed access to a spec's keyword arguments, with errors that name the spec, the key and
//! the valid keys.

use super::{Spec, Value};
use crate::Error;
use std::cell::RefCell;

/// Reads typed keyword arguments out of a [`Spec`].
///
/// Each getter takes the key and its default; every key asked for is remembered, so that
/// [`Args::finish`] can reject unknown keys and list the valid ones.
pub struct Args<'a> {
    spec: &'a Spec,
    known: RefCell<Vec<&'static str>>,
    positional: usize,
}

impl<'a> Args<'a> {
    /// Wraps `spec`; it may take up to `positional` positional arguments (read with
    /// [`Args::positional`]).
    pub fn new(spec: &'a Spec, positional: usize) -> Self {
        Args {
            spec,
            known: RefCell::new(Vec::new()),
            positional,
        }
    }

    /// The spec being read.
    pub fn spec(&self) -> &Spec {
        self.spec
    }

    /// An error about `key`'s value.
    pub fn invalid(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::InvalidArgument {
            spec: self.spec.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    fn raw(&self, key: &'static str) -> Option<&'a Value> {
        self.known.borrow_mut().push(key);
        self.spec.get(key)
    }

    /// The value of `key` as written, for keys of a form of their own (the key counts as
    /// known to [`Args::finish`]).
    pub fn value(&self, key: &'static str) -> Option<&'a Value> {
        self.raw(key)
    }

    /// The `index`-th positional argument.
    pub fn positional(&self, index: usize) -> Option<&'a Value> {
        self.spec
            .args
            .iter()
            .filter(|(k, _)| k.is_none())
            .nth(index)
            .map(|(_, v)| v)
    }

    /// A number, or `default` when absent.
    pub fn f64(&self, key: &'static str, default: f64) -> Result<f64, Error> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    /// A number, if given.
    pub fn opt_f64(&self, key: &'static str) -> Result<Option<f64>, Error> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Num(x)) if x.is_nan() => {
                Err(self.invalid(key, "must be a number, got NaN"))
            }
            Some(Value::Num(x)) if x.is_infinite() => Err(self.invalid(
                key,
                format!("must be a finite number, got {}", super::format_number(*x)),
            )),
            Some(Value::Num(x)) => Ok(Some(*x)),
            Some(v) => Err(self.invalid(key, format!("must be a number, got {} ({v})", v.kind()))),
        }
    }

    /// A number that must be given.
    pub fn required_f64(&self, key: &'static str) -> Result<f64, Error> {
        self.opt_f64(key)?
            .ok_or_else(|| self.invalid(key, "is required"))
    }

    /// A non-negative whole number, or `default` when absent.
    pub fn count(&self, key: &'static str, default: u64) -> Result<u64, Error> {
        Ok(self.opt_count(key)?.unwrap_or(default))
    }

    /// A non-negative whole number, if given.
    pub fn opt_count(&self, key: &'static str) -> Result<Option<u64>, Error> {
        match self.opt_f64(key)? {
            None => Ok(None),
            Some(x) => to_count(x).map(Some).map_err(|m| self.invalid(key, m)),
        }
    }

    /// `true`/`false`, or `default` when absent.
    pub fn bool(&self, key: &'static str, default: bool) -> Result<bool, Error> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.invalid(
                key,
                format!("must be true or false, got {} ({v})", v.kind()),
            )),
        }
    }

    /// A pair of numbers such as `betas=(0.9, 0.999)`.
    pub fn pair(&self, key: &'static str, default: (f64, f64)) -> Result<(f64, f64), Error> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Tuple(items)) | Some(Value::List(items)) if items.len() == 2 => {
                match (&items[0], &items[1]) {
                    (Value::Num(a), Value::Num(b)) => Ok((*a, *b)),
                    _ => Err(self.invalid(key, "must be a pair of numbers such as (0.9, 0.999)")),
                }
            }
            Some(v) => Err(self.invalid(
                key,
                format!("must be a pair of numbers such as (0.9, 0.999), got {v}"),
            )),
        }
    }

    /// A triple of numbers such as AdEMAMix's `betas=(0.9, 0.999, 0.9999)`.
    pub fn triple(
        &self,
        key: &'static str,
        default: (f64, f64, f64),
    ) -> Result<(f64, f64, f64), Error> {
        let message = "must be three numbers such as (0.9, 0.999, 0.9999)";
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Tuple(items)) | Some(Value::List(items)) if items.len() == 3 => {
                match (&items[0], &items[1], &items[2]) {
                    (Value::Num(a), Value::Num(b), Value::Num(c)) => Ok((*a, *b, *c)),
                    _ => Err(self.invalid(key, message)),
                }
            }
            Some(v) => Err(self.invalid(key, format!("{message}, got {v}"))),
        }
    }

    /// An optimizer or schedule spec such as `fallback=adamw(lr=3e-4)` (a bare name is a spec
    /// without arguments), if given.
    pub fn spec_value(&self, key: &'static str) -> Result<Option<Spec>, Error> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Spec(s)) => Ok(Some(s.clone())),
            Some(Value::Word(w)) => Ok(Some(Spec::new(w.clone()))),
            Some(v) => Err(self.invalid(
                key,
                format!("must be a spec such as adamw(lr=3e-4), got {v}"),
            )),
        }
    }

    /// A list of whole numbers such as `milestones=[30, 80]`.
    pub fn counts(&self, key: &'static str) -> Result<Option<Vec<u64>>, Error> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::List(items)) | Some(Value::Tuple(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Num(x) => to_count(*x).map_err(|m| self.invalid(key, m)),
                    other => {
                        Err(self.invalid(key, format!("must hold whole numbers, got {other}")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.invalid(key, format!("must be a list such as [30, 80], got {v}"))),
        }
    }

    /// A bare word from `choices`, or `default` when absent.
    pub fn word(
        &self,
        key: &'static str,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str, Error> {
        let given = match self.raw(key) {
            None => return Ok(default),
            Some(Value::Word(w)) => w.as_str(),
            Some(v) => {
                return Err(self.invalid(
                    key,
                    format!("must be one of {}, got {v}", choices.join(", ")),
                ))
            }
        };
        choices
            .iter()
            .find(|c| **c == given)
            .copied()
            .ok_or_else(|| {
                self.invalid(
                    key,
                    format!("must be one of {}, got '{given}'", choices.join(", ")),
                )
            })
    }

    /// Checks that every keyword argument was a known key and that no more positional
    /// arguments were given than allowed.
    pub fn finish(self) -> Result<(), Error> {
        let known = self.known.borrow();
        let positional = self.spec.args.iter().filter(|(k, _)| k.is_none()).count();
        if positional > self.positional {
            return Err(Error::InvalidArgument {
                spec: self.spec.to_string(),
                key: "(positional)".into(),
                message: format!(
                    "'{}' takes {} positional argument(s), got {positional}; name the keys (valid keys: {})",
                    self.spec.name,
                    self.positional,
                    known.join(", ")
                ),
            });
        }
        for (key, _) in &self.spec.args {
            if let Some(key) = key {
                if !known.contains(&key.as_str()) {
                    return Err(Error::UnknownKey {
                        spec: self.spec.to_string(),
                        key: key.clone(),
                        valid: known.join(", "),
                    });
                }
            }
        }
        Ok(())
    }
}

fn to_count(x: f64) -> Result<u64, String> {
    if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 {
        Ok(x as u64)
    } else {
        Err(format!(
            "must be a non-negative whole number, got {}",
            super::format_number(x)
        ))
    }
}
