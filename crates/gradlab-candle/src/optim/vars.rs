//! The variables an optimizer is built over, checked (unique names, CPU, one float type) and
//! matched to the configuration's parameter groups.

use super::*;

/// Checks the variables: unique names, all on the CPU, all of one type among f32, f64, bf16
/// and f16; their type (f32 when there are none).
pub(super) fn check_vars(named: &[(String, Var)]) -> Result<DType> {
    for w in named.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(Error::Parameter {
                name: w[0].0.clone(),
                problem: "is given twice".into(),
            });
        }
    }
    for (name, v) in named {
        if !v.device().is_cpu() {
            return Err(Error::Parameter {
                name: name.clone(),
                problem: format!(
                    "is on {:?}: gradlab's optimizers run on the CPU (move the model there)",
                    v.device()
                ),
            });
        }
        if !matches!(
            v.dtype(),
            DType::F32 | DType::F64 | DType::BF16 | DType::F16
        ) {
            return Err(Error::Parameter {
                name: name.clone(),
                problem: format!(
                    "has type {:?}; the optimizers take f32, f64, bf16 or f16",
                    v.dtype()
                ),
            });
        }
    }
    let dtype = named.first().map_or(DType::F32, |(_, v)| v.dtype());
    if let Some((name, v)) = named.iter().find(|(_, v)| v.dtype() != dtype) {
        return Err(Error::Parameter {
            name: name.clone(),
            problem: format!("is {:?}, the others {dtype:?}", v.dtype()),
        });
    }
    Ok(dtype)
}

/// Turns the groups given by variables into groups by the names the variables have here.
pub(super) fn resolve_var_groups(
    config: &mut OptimizerConfig,
    named: &[(String, Var)],
) -> Result<()> {
    for (vars, group) in std::mem::take(&mut config.var_groups) {
        let mut params = Vec::with_capacity(vars.len());
        for v in &vars {
            let id = v.as_tensor().id();
            let (name, _) = named
                .iter()
                .find(|(_, w)| w.as_tensor().id() == id)
                .ok_or_else(|| {
                    Error::setting(
                        "parameter groups",
                        format!(
                            "a parameter group names a variable of shape {:?} that the \
                             optimizer was not given",
                            v.dims()
                        ),
                    )
                })?;
            params.push(name.clone());
        }
        config.groups.push(ParamGroup { params, ..group });
    }
    Ok(())
}

/// Without names, a group pattern can only match the made-up names `param0`, ...: a pattern
/// that matches none of them is refused with the way out.
pub(super) fn refuse_unmatched_patterns(
    config: &OptimizerConfig,
    named: &[(String, Var)],
) -> Result<()> {
    for g in &config.groups {
        for p in &g.params {
            if !named.iter().any(|(n, _)| optim::layout::glob_match(p, n)) {
                return Err(Error::setting(
                    "parameter groups",
                    format!(
                        "parameter group pattern '{p}' cannot match: these variables were given \
                         without names (param0, param1, ...); build the optimizer with \
                         GradlabOptimizer::from_varmap or with_names, or give the group's \
                         variables with OptimizerConfig::group_vars"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `VarMap`'s variables with the names its `VarBuilder` gave them.
pub(crate) fn varmap_vars(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    Ok(varmap
        .data()
        .lock()
        .map_err(|_| Error::Model {
            message: "the VarMap's lock is poisoned".into(),
        })?
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect())
}
