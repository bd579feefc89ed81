//! Saved optimizer state: keyed by parameter name, versioned, checked on load, and written
//! atomically as one safetensors file (element buffers as tensors, scalars as JSON metadata).

use crate::{Error, Real, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Version of the state format; bumped on any incompatible change.
pub const STATE_VERSION: u32 = 1;

/// Everything an optimizer needs to continue bit-identically.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDict<T> {
    /// The scalar part (also what goes into the file's metadata).
    pub meta: StateMeta,
    /// Element buffers, keyed `"{tensor}/{slot}"`, with their shapes.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<T>)>,
}

/// The scalar part of a [`StateDict`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMeta {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Optimizer name (`adam`, `lookahead`, ...).
    pub optimizer: String,
    /// Canonical spec of each parameter group, as it stands (schedules change lr/momentum).
    pub groups: Vec<String>,
    /// Steps taken.
    pub step: u64,
    /// Per-tensor scalars, keyed by tensor name.
    pub scalars: BTreeMap<String, BTreeMap<String, f64>>,
    /// Optimizer-wide scalars (e.g. Lookahead's counter); also free for callers to extend.
    pub extra: BTreeMap<String, f64>,
    /// Keys of state tensors that belong to a whole parameter tensor rather than to its
    /// elements (Adafactor's row and column means): a sharded run keeps them whole on every
    /// rank that holds a piece of the tensor, where element buffers are cut with the tensor.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub whole: std::collections::BTreeSet<String>,
}

impl<T: Real> StateDict<T> {
    /// Writes the state atomically (a temporary file renamed into place) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::io::write_atomic(path, &bytes)
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_with(std::iter::empty())
    }

    /// Serialises to safetensors bytes with more metadata entries beside the state's (for
    /// callers that keep a configuration with it; read them with [`read_metadata`]).
    pub fn to_bytes_with(
        &self,
        extra: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<u8>> {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                let mut bytes = Vec::new();
                T::extend_le_bytes(values, &mut bytes);
                (name.clone(), shape.clone(), bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
            .iter()
            .map(|(name, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(
                    T::safetensors_dtype(),
                    shape.clone(),
                    bytes,
                )
                .map_err(|e| state_error(None, format!("tensor '{name}': {e}")))?;
                Ok((name.clone(), view))
            })
            .collect::<Result<_>>()?;
        let meta = serde_json::to_string(&self.meta).expect("state metadata serialises");
        let mut info: std::collections::HashMap<String, String> = extra.into_iter().collect();
        info.insert("gradlab_optimizer_state".to_string(), meta);
        safetensors::serialize(views, Some(info)).map_err(|e| state_error(None, e.to_string()))
    }

    /// Reads a state written by [`StateDict::save`]; buffers stored in another float type are
    /// converted.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|error| Error::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::State { message, .. } => state_error(Some(path), message),
            other => other,
        })
    }

    /// Parses safetensors bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| state_error(None, format!("not a safetensors file: {e}")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("gradlab_optimizer_state"))
            .ok_or_else(|| {
                state_error(None, "no gradlab optimizer state in this file".to_string())
            })?;
        let meta: StateMeta = serde_json::from_str(meta_json)
            .map_err(|e| state_error(None, format!("malformed metadata: {e}")))?;
        check_version(&meta)?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| state_error(None, e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values: Vec<T> = match view.dtype() {
                safetensors::Dtype::F32 => <f32 as Real>::from_le_bytes(view.data())
                    .into_iter()
                    .map(|x| T::from_f64(x as f64))
                    .collect(),
                safetensors::Dtype::F64 => <f64 as Real>::from_le_bytes(view.data())
                    .into_iter()
                    .map(T::from_f64)
                    .collect(),
                other => {
                    return Err(state_error(
                        None,
                        format!("tensor '{name}' has unsupported dtype {other:?}"),
                    ))
                }
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(StateDict { meta, tensors })
    }
}

/// The metadata entries of a safetensors file's bytes (the state's own and those given to
/// [`StateDict::to_bytes_with`]).
pub fn read_metadata(bytes: &[u8]) -> Result<std::collections::HashMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| state_error(None, format!("not a safetensors file: {e}")))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// Refuses a state saved by another optimizer than `expected`.
pub(crate) fn check_optimizer(saved: &str, expected: &str) -> Result<()> {
    if saved == expected {
        return Ok(());
    }
    Err(state_error(
        None,
        format!("was saved by optimizer '{saved}', cannot load into '{expected}'"),
    ))
}

/// The inner optimizer's name in a wrapper's state name (`lookahead(adam)` → `adam`); a
/// state of anything else is refused, naming `expected`.
pub(crate) fn inner_name<'a>(saved: &'a str, wrapper: &str, expected: &str) -> Result<&'a str> {
    saved
        .strip_prefix(wrapper)
        .and_then(|rest| rest.strip_prefix('('))
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| {
            state_error(
                None,
                format!("was saved by optimizer '{saved}', cannot load into '{expected}'"),
            )
        })
}

pub(crate) fn state_error(path: Option<&Path>, message: String) -> Error {
    Error::State {
        source_name: path.map(|p| p.display().to_string()),
        message,
    }
}

/// Refuses a state written in another format version.
pub(crate) fn check_version(meta: &StateMeta) -> Result<()> {
    if meta.version == STATE_VERSION {
        Ok(())
    } else {
        Err(state_error(
            None,
            format!(
                "format version {} is not supported (expected {STATE_VERSION})",
                meta.version
            ),
        ))
    }
}

/// The saved optimizer-wide scalar `key` (in the metadata's `extra`).
pub(crate) fn saved_extra<T>(state: &StateDict<T>, key: &str) -> Result<f64> {
    state
        .meta
        .extra
        .get(key)
        .copied()
        .ok_or_else(|| state_error(None, format!("scalar '{key}' is missing")))
}

/// The saved element buffer `key`, which must have `shape`.
pub(crate) fn saved_tensor<'a, T>(
    state: &'a StateDict<T>,
    key: &str,
    shape: &[usize],
) -> Result<&'a [T]> {
    match state.tensors.get(key) {
        Some((s, values)) if s == shape && values.len() == shape.iter().product::<usize>() => {
            Ok(values)
        }
        Some((s, _)) => Err(state_error(
            None,
            format!("tensor '{key}' has shape {s:?}, the parameter has shape {shape:?}"),
        )),
        None => Err(state_error(None, format!("tensor '{key}' is missing"))),
    }
}

/// Refuses a state with element buffers that none of `own` names.
pub(crate) fn refuse_foreign<T>(state: &StateDict<T>, own: &BTreeSet<String>) -> Result<()> {
    match state.tensors.keys().find(|k| !own.contains(*k)) {
        Some(extra) => Err(state_error(
            None,
            format!("tensor '{extra}' does not belong to this optimizer's parameters"),
        )),
        None => Ok(()),
    }
}
