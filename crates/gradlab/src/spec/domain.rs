//! The valid range of every numeric spec key, checked in one place.
//!
//! Optimizers and schedules read their numbers through [`Args::number`] with a [`Domain`]:
//! every number must be finite, and lie within the domain's bounds; the error names the key,
//! the value and the range (`lr: must be a finite number >= 0, got -1`). The parser already
//! refuses numbers that overflow f64 (`1e400`), so `inf` only reaches a key when typed.

use super::{format_number, Args};
use crate::Error;

/// A closed, open or half-open interval of finite numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Domain {
    lo: f64,
    lo_open: bool,
    hi: f64,
    hi_open: bool,
}

impl Domain {
    /// Any finite number.
    pub const FINITE: Domain = Domain::new(f64::NEG_INFINITY, true, f64::INFINITY, true);
    /// `>= 0` (learning rates, eps, weight decay, ...).
    pub const NON_NEGATIVE: Domain = Domain::new(0.0, false, f64::INFINITY, true);
    /// `> 0` (factors that divide or scale the learning rate).
    pub const POSITIVE: Domain = Domain::new(0.0, true, f64::INFINITY, true);
    /// `[0, 1)`: averaging coefficients whose value 1 would freeze the average (momentum,
    /// betas, RMSProp's alpha, Adadelta's rho).
    pub const DECAY: Domain = Domain::new(0.0, false, 1.0, true);
    /// `[0, 1]`.
    pub const UNIT: Domain = Domain::new(0.0, false, 1.0, false);
    /// `(0, 1]`.
    pub const UNIT_OPEN_LOW: Domain = Domain::new(0.0, true, 1.0, false);
    /// `(0, 1)`: factors that must shrink a value without zeroing it.
    pub const UNIT_OPEN: Domain = Domain::new(0.0, true, 1.0, true);

    /// The interval from `lo` to `hi`, each end open or closed.
    pub const fn new(lo: f64, lo_open: bool, hi: f64, hi_open: bool) -> Self {
        Domain {
            lo,
            lo_open,
            hi,
            hi_open,
        }
    }

    /// Whether `x` is finite and in the interval.
    pub fn contains(&self, x: f64) -> bool {
        let above = if self.lo_open {
            x > self.lo
        } else {
            x >= self.lo
        };
        let below = if self.hi_open {
            x < self.hi
        } else {
            x <= self.hi
        };
        x.is_finite() && above && below
    }

    /// The check of one value, as the error message's text on failure.
    pub fn check(&self, x: f64) -> Result<f64, String> {
        if self.contains(x) {
            Ok(x)
        } else {
            Err(format!("must be {self}, got {}", format_number(x)))
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lo_inf, hi_inf) = (self.lo == f64::NEG_INFINITY, self.hi == f64::INFINITY);
        let lo = format_number(self.lo);
        let hi = format_number(self.hi);
        match (lo_inf, hi_inf) {
            (true, true) => write!(f, "a finite number"),
            (false, true) => write!(
                f,
                "a finite number {} {lo}",
                if self.lo_open { ">" } else { ">=" }
            ),
            (true, false) => write!(
                f,
                "a finite number {} {hi}",
                if self.hi_open { "<" } else { "<=" }
            ),
            (false, false) => write!(
                f,
                "in {}{lo}, {hi}{}",
                if self.lo_open { "(" } else { "[" },
                if self.hi_open { ")" } else { "]" }
            ),
        }
    }
}

impl Args<'_> {
    /// A number in `domain`, or `default` when absent.
    pub fn number(&self, key: &'static str, default: f64, domain: Domain) -> Result<f64, Error> {
        domain
            .check(self.f64(key, default)?)
            .map_err(|m| self.invalid(key, m))
    }

    /// A number in `domain`, or `inf` for keys where it means "no limit" (Prodigy's
    /// `growth_rate`).
    pub fn limit(&self, key: &'static str, default: f64, domain: Domain) -> Result<f64, Error> {
        match self.value(key) {
            None => Ok(default),
            Some(super::Value::Num(x)) if *x == f64::INFINITY => Ok(*x),
            _ => self.number(key, default, domain),
        }
    }

    /// A number in `domain`, if given.
    pub fn opt_number(&self, key: &'static str, domain: Domain) -> Result<Option<f64>, Error> {
        self.opt_f64(key)?
            .map(|x| domain.check(x).map_err(|m| self.invalid(key, m)))
            .transpose()
    }

    /// A number in `domain` that must be given.
    pub fn required_number(&self, key: &'static str, domain: Domain) -> Result<f64, Error> {
        domain
            .check(self.required_f64(key)?)
            .map_err(|m| self.invalid(key, m))
    }

    /// A pair of numbers, each in `domain` (`betas=(0.9, 0.999)`).
    pub fn pair_in(
        &self,
        key: &'static str,
        default: (f64, f64),
        domain: Domain,
    ) -> Result<(f64, f64), Error> {
        let (a, b) = self.pair(key, default)?;
        for (i, x) in [a, b].into_iter().enumerate() {
            domain
                .check(x)
                .map_err(|m| self.invalid(key, format!("item at index {i} {m}")))?;
        }
        Ok((a, b))
    }

    /// A triple of numbers, each in `domain` (AdEMAMix's `betas=(0.9, 0.999, 0.9999)`).
    pub fn triple_in(
        &self,
        key: &'static str,
        default: (f64, f64, f64),
        domain: Domain,
    ) -> Result<(f64, f64, f64), Error> {
        let (a, b, c) = self.triple(key, default)?;
        for (i, x) in [a, b, c].into_iter().enumerate() {
            domain
                .check(x)
                .map_err(|m| self.invalid(key, format!("item at index {i} {m}")))?;
        }
        Ok((a, b, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_say_their_range() {
        assert_eq!(Domain::NON_NEGATIVE.to_string(), "a finite number >= 0");
        assert_eq!(Domain::DECAY.to_string(), "in [0, 1)");
        assert_eq!(Domain::UNIT_OPEN_LOW.to_string(), "in (0, 1]");
        assert!(Domain::DECAY.contains(0.0) && !Domain::DECAY.contains(1.0));
        assert!(!Domain::NON_NEGATIVE.contains(f64::INFINITY));
        assert!(!Domain::FINITE.contains(f64::NAN));
        assert_eq!(
            Domain::POSITIVE.check(-1.0).unwrap_err(),
            "must be a finite number > 0, got -1"
        );
    }
}
