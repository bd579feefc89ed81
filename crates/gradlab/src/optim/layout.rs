//! Named parameter segments and their place in the flat parameter space.

use crate::{Error, Result};

/// One parameter tensor: a name, a shape, and its range `offset..offset+len` in the flat
/// parameter space that optimizer state is indexed by.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Unique name, e.g. `fc1.weight`.
    pub name: String,
    /// Shape (the product is `len`).
    pub shape: Vec<usize>,
    /// Start in the flat parameter space.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// The ordered list of a model's parameter tensors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    segments: Vec<Segment>,
    total: usize,
}

impl Layout {
    /// Builds a layout from `(name, shape)` pairs, in that order.
    ///
    /// Names must be unique and non-empty.
    pub fn new<S: Into<String>>(
        tensors: impl IntoIterator<Item = (S, Vec<usize>)>,
    ) -> Result<Self> {
        let mut layout = Layout::default();
        for (name, shape) in tensors {
            let name = name.into();
            if name.is_empty() {
                return Err(Error::Name {
                    name,
                    problem: "a parameter tensor has an empty name".into(),
                });
            }
            if layout.segments.iter().any(|s| s.name == name) {
                return Err(Error::Name {
                    problem: format!("parameter name '{name}' appears twice"),
                    name,
                });
            }
            let len = shape.iter().product();
            layout.segments.push(Segment {
                name,
                shape,
                offset: layout.total,
                len,
            });
            layout.total += len;
        }
        Ok(layout)
    }

    /// A layout of one flat tensor.
    pub fn single(name: &str, len: usize) -> Self {
        Layout::new([(name, vec![len])]).expect("a single named tensor is a valid layout")
    }

    /// The segments in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total number of parameters.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The tensors of a flat buffer that holds the layout's tensors back to back.
    pub fn split<'a, T>(&self, flat: &'a [T]) -> Result<Vec<&'a [T]>> {
        self.check_flat(flat.len())?;
        Ok(self
            .segments
            .iter()
            .map(|s| &flat[s.offset..s.offset + s.len])
            .collect())
    }

    /// [`Layout::split`], mutably.
    pub fn split_mut<'a, T>(&self, flat: &'a mut [T]) -> Result<Vec<&'a mut [T]>> {
        self.check_flat(flat.len())?;
        let mut out = Vec::with_capacity(self.segments.len());
        let mut rest = flat;
        for seg in &self.segments {
            let (head, tail) = rest.split_at_mut(seg.len);
            out.push(head);
            rest = tail;
        }
        Ok(out)
    }

    fn check_flat(&self, len: usize) -> Result<()> {
        if len != self.total {
            return Err(Error::Length {
                what: "a flat buffer of this layout".into(),
                got: len,
                unit: "elements",
                expected: self.total,
            });
        }
        Ok(())
    }

    /// Index of the segment called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.name == name)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_globs() {
        let l = Layout::new([("w", vec![2, 3]), ("b", vec![3])]).unwrap();
        assert_eq!(l.total(), 9);
        assert_eq!(l.segments()[1].offset, 6);
        assert!(Layout::new([("w", vec![1]), ("w", vec![2])]).is_err());
        assert!(glob_match("*.bias", "fc1.bias"));
        assert!(glob_match("fc*.weight", "fc12.weight"));
        assert!(!glob_match("*.bias", "fc1.weight"));
        assert!(glob_match("w", "w"));
    }
}
