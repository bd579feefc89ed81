//! One file for an optimizer: its state (safetensors tensors), the config it was built from,
//! its schedule's state and, for optimizers built without names, a fingerprint of the
//! variables, so that a state is never loaded into the wrong parameters silently.

use super::{GradlabOptimizer, Inner, OptimizerConfig};
use crate::{Error, Result};
use candle_core::{DType, Var};
use gradlab::optim::state::read_metadata;
use gradlab::schedule::Scheduler;
use serde_json::{json, Value};
use std::path::Path;

const CONFIG: &str = "gradlab_config";
const SCHEDULE: &str = "gradlab_schedule";
const NAMING: &str = "gradlab_naming";
const FINGERPRINT: &str = "gradlab_fingerprint";

impl GradlabOptimizer {
    /// Saves the optimizer to one file, atomically: its state, the config it was built from,
    /// the schedule's state, and (built without names) a fingerprint of the variables' values.
    /// [`GradlabOptimizer::load`] or [`GradlabOptimizer::resume_from`] continue from it
    /// exactly.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut meta = vec![
            (
                CONFIG.to_string(),
                self.config.to_json(&self.config.groups).to_string(),
            ),
            (
                NAMING.to_string(),
                if self.unnamed { "unnamed" } else { "named" }.to_string(),
            ),
        ];
        if let Some(s) = &self.scheduler {
            let schedule = json!({ "spec": s.spec().to_string(), "state": s.state() });
            meta.push((SCHEDULE.to_string(), schedule.to_string()));
        }
        if self.unnamed {
            meta.push((
                FINGERPRINT.to_string(),
                fingerprint(&self.vars)?.to_string(),
            ));
        }
        let bytes =
            match &self.inner {
                Inner::F32(o) => o.state_dict().to_bytes_with(meta)?,
                Inner::F64(o) => o.state_dict().to_bytes_with(meta)?,
                Inner::Master(m) => m.state_dict().to_bytes_with(meta)?,
                Inner::Sharded(_) => return Err(Error::unsupported(
                    "a data-parallel optimizer is saved by the trainer's checkpoints (its state \
                     is spread over the ranks)",
                )),
            };
        gradlab::io::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// An optimizer over `varmap`'s variables rebuilt from a file written by
    /// [`GradlabOptimizer::save`] (config, schedule and state), to continue exactly where the
    /// saved one stopped. Load the model's weights into `varmap` as well.
    pub fn load(path: impl AsRef<Path>, varmap: &candle_nn::VarMap) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read(path)?;
        let meta = read_metadata(&bytes)?;
        let config_json = meta.get(CONFIG).ok_or_else(|| {
            saved_error(
                path,
                "holds no optimizer config (was it written by GradlabOptimizer::save?)",
            )
        })?;
        let config = serde_json::from_str::<Value>(config_json)
            .map_err(|e| e.to_string())
            .and_then(|v| OptimizerConfig::from_json(&v))
            .map_err(|e| saved_error(path, &format!("malformed config: {e}")))?;
        if meta.get(NAMING).map(String::as_str) == Some("unnamed") {
            return Err(saved_error(
                path,
                "was saved by an optimizer built without names (candle_nn::Optimizer::new); build it the same way and call resume_from",
            ));
        }
        let mut opt = GradlabOptimizer::from_varmap(varmap, &config)?;
        opt.resume_from_bytes(&bytes, path)?;
        Ok(opt)
    }

    /// Continues from a file written by [`GradlabOptimizer::save`]: optimizer state (learning
    /// rates as scheduled included) and schedule state. Built without names, the variables
    /// must hold the values they had when the file was written, in the same order (load the
    /// model's weights first); otherwise the load is refused.
    pub fn resume_from(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = read(path)?;
        self.resume_from_bytes(&bytes, path)
    }

    fn resume_from_bytes(&mut self, bytes: &[u8], path: &Path) -> Result<()> {
        let meta = read_metadata(bytes)?;
        if self.unnamed {
            let saved = meta.get(FINGERPRINT).ok_or_else(|| {
                saved_error(
                    path,
                    "was saved with names; an optimizer built without names cannot match its tensors: build it with GradlabOptimizer::from_varmap or with_names",
                )
            })?;
            let saved: Value = serde_json::from_str(saved)
                .map_err(|e| saved_error(path, &format!("malformed fingerprint: {e}")))?;
            check_fingerprint(&saved, &fingerprint(&self.vars)?, path)?;
        }
        let scheduler = match (&self.config.schedule, meta.get(SCHEDULE)) {
            (None, None) => None,
            (Some(spec), Some(saved)) => {
                let saved: Value = serde_json::from_str(saved)
                    .map_err(|e| saved_error(path, &format!("malformed schedule: {e}")))?;
                let same = gradlab::schedule::canonical_spec(spec)?
                    == saved["spec"].as_str().unwrap_or_default();
                if !same {
                    return Err(saved_error(
                        path,
                        &format!(
                            "was saved with schedule {}, this optimizer has '{spec}'",
                            saved["spec"]
                        ),
                    ));
                }
                Some(Scheduler::resume(spec, &saved["state"])?)
            }
            (Some(spec), None) => {
                return Err(saved_error(
                    path,
                    &format!("was saved without a schedule, this optimizer has '{spec}'"),
                ))
            }
            (None, Some(_)) => {
                return Err(saved_error(
                    path,
                    "was saved with a schedule, this optimizer has none",
                ))
            }
        };
        self.load_state_bytes(bytes, path)?;
        self.scheduler = scheduler;
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        gradlab::Error::Io {
            path: path.display().to_string(),
            error,
        }
        .into()
    })
}

fn saved_error(path: &Path, problem: &str) -> Error {
    Error::SavedFile {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// Each variable's shape and the CRC-32 of its values' bytes, in order.
fn fingerprint(vars: &[Var]) -> Result<Value> {
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        let t = v.as_tensor().flatten_all()?;
        let mut hasher = crc32fast::Hasher::new();
        match t.dtype() {
            DType::F64 => t
                .to_vec1::<f64>()?
                .iter()
                .for_each(|x| hasher.update(&x.to_le_bytes())),
            _ => t
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .for_each(|x| hasher.update(&x.to_le_bytes())),
        }
        out.push(json!({ "shape": v.dims(), "crc32": hasher.finalize() }));
    }
    Ok(Value::Array(out))
}

/// Refuses a state whose variables differ from these: another order (say so: the usual cause
/// is a `VarMap`'s order, which changes between runs) or other values.
fn check_fingerprint(saved: &Value, now: &Value, path: &Path) -> Result<()> {
    if saved == now {
        return Ok(());
    }
    let (Some(a), Some(b)) = (saved.as_array(), now.as_array()) else {
        return Err(saved_error(path, "malformed fingerprint"));
    };
    let mut sorted_a: Vec<String> = a.iter().map(Value::to_string).collect();
    let mut sorted_b: Vec<String> = b.iter().map(Value::to_string).collect();
    sorted_a.sort();
    sorted_b.sort();
    let problem = if a.len() != b.len() {
        format!(
            "holds the state of {} variables, this optimizer has {}",
            a.len(),
            b.len()
        )
    } else if sorted_a == sorted_b {
        "the variables come in another order than when it was saved (a VarMap's all_vars() order changes from run to run), so its state would go to the wrong tensors; build the optimizer with GradlabOptimizer::from_varmap, which matches state by name".into()
    } else {
        "the variables' values differ from those it was saved with: load the model's weights saved at the same step first, or build the optimizer with GradlabOptimizer::from_varmap, which matches state by name".into()
    };
    Err(saved_error(path, &problem))
}
