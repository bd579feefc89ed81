//! The text a character model learns from: its vocabulary, its characters as ids, and the
//! windows cut from it (training windows from the first part, test windows from the rest).

use crate::data::{Dataset, Split};
use crate::{Error, Result};
use std::path::Path;

/// A text as character ids over its own vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct CharCorpus {
    /// The distinct characters, sorted; a character's id is its index.
    pub vocabulary: Vec<char>,
    /// The text as ids.
    pub ids: Vec<u8>,
}

impl CharCorpus {
    /// The corpus of `text`; refused when it is shorter than two characters or has more
    /// than 256 distinct characters.
    pub fn new(text: &str) -> Result<Self> {
        let mut vocabulary: Vec<char> = text.chars().collect();
        vocabulary.sort_unstable();
        vocabulary.dedup();
        if vocabulary.len() > 256 {
            return Err(Error::setting(
                "text",
                format!(
                    "the text has {} distinct characters; a character model here takes at most 256",
                    vocabulary.len()
                ),
            ));
        }
        let ids: Vec<u8> = text
            .chars()
            .map(|c| vocabulary.binary_search(&c).expect("in the vocabulary") as u8)
            .collect();
        if ids.len() < 2 {
            return Err(Error::setting(
                "text",
                format!(
                    "the text has {} character(s): a language model needs at least two",
                    ids.len()
                ),
            ));
        }
        Ok(CharCorpus { vocabulary, ids })
    }

    /// The corpus of the UTF-8 text file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read the text: {e}")))?;
        Self::new(&text).map_err(|e| Error::file(path, e.to_string()))
    }

    /// The text bundled with gradlab: the Book of Genesis, King James Version
    /// (`data/kjv-genesis.txt`, public domain; see `data/README.md`).
    pub fn bundled() -> Result<Self> {
        Self::load(&crate::data::bundled_dir().join("kjv-genesis.txt"))
    }

    /// Every `stride`-th window of `context` characters whose start lies in `range` (of
    /// the ids), with the character after it as the label.
    fn windows(&self, context: usize, stride: usize, range: std::ops::Range<usize>) -> Dataset {
        let mut set = Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            rows: 1,
            cols: context,
        };
        let end = range.end.min(self.ids.len().saturating_sub(context));
        let mut start = range.start;
        while start < end {
            set.images
                .extend(self.ids[start..start + context].iter().map(|&c| c as f32));
            set.labels.push(self.ids[start + context]);
            start += stride.max(1);
        }
        set
    }

    /// Training and test windows, every `stride`-th of each part: the first
    /// `1 − test_fraction` of the text for training, the rest for testing, the two parts
    /// never sharing a character.
    pub fn split(&self, context: usize, stride: usize, test_fraction: f64) -> Result<Split> {
        if context == 0 || stride == 0 {
            return Err(Error::setting(
                "context",
                "a character model needs a context and a stride of at least 1",
            ));
        }
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(Error::setting(
                "test fraction",
                format!("test fraction {test_fraction} is out of range: it must be in (0, 1)"),
            ));
        }
        let cut = ((1.0 - test_fraction) * self.ids.len() as f64) as usize;
        let train = self.windows(context, stride, 0..cut.saturating_sub(context));
        let test = self.windows(context, stride, cut..self.ids.len());
        if train.is_empty() || test.is_empty() {
            return Err(Error::setting(
                "context",
                format!(
                    "a text of {} characters gives no {} windows of {context} characters",
                    self.ids.len(),
                    if train.is_empty() { "training" } else { "test" }
                ),
            ));
        }
        Ok(Split {
            source: format!(
                "{} characters, vocabulary {}, windows of {context} (stride {stride}): {} train / {} test",
                self.ids.len(),
                self.vocabulary.len(),
                train.len(),
                test.len()
            ),
            train,
            test,
        })
    }
}
