//! Optimizers built from spec strings: the names, the canonical form of a spec, the rule or
//! standalone optimizer behind each name, wrappers' inner specs, parameter groups.

use super::*;

/// The names every optimizer spec may start with.
pub const OPTIMIZERS: &[&str] = &[
    "sgd",
    "sgdw",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "adamax",
    "nadam",
    "radam",
    "adadelta",
    "adabound",
    "lamb",
    "lars",
    "lion",
    "swats",
    "lookahead",
    "adopt",
    "ademamix",
    "rprop",
    "asgd",
    "sam",
    "lbfgs",
    "sgd_schedulefree",
    "adamw_schedulefree",
    "muon",
    "adafactor",
    "prodigy",
];

/// The canonical form of an optimizer spec, every hyperparameter written out: specs that mean
/// the same optimizer (`adamw(lr=1e-3)`, `adamw(lr=0.001, betas=(0.9, 0.999))`) give the same
/// string. An invalid spec is its error.
pub fn canonical_spec(spec: &str) -> Result<String> {
    let parsed = crate::spec::parse(spec)?;
    // A matrix (Muon needs one), and a vector when Muon has a fallback to check.
    let mut tensors = vec![("w", vec![1, 1])];
    if parsed.name == "muon" && parsed.get("fallback").is_some() {
        tensors.push(("b", vec![1]));
    }
    let layout = Layout::new(tensors)?;
    Ok(
        build_from_spec::<f64>(&parsed, layout, &[], Options::default())?
            .spec()
            .to_string(),
    )
}

/// Builds an optimizer from a spec string such as `"adamw(lr=1e-3, weight_decay=0.05)"`.
pub fn build<T: Real>(
    spec: &str,
    layout: Layout,
    groups: &[ParamGroup],
    options: Options,
) -> Result<Box<dyn Optimizer<T>>> {
    build_from_spec(&crate::spec::parse(spec)?, layout, groups, options)
}

/// Builds an optimizer from a parsed spec.
pub fn build_from_spec<T: Real>(
    spec: &Spec,
    layout: Layout,
    groups: &[ParamGroup],
    options: Options,
) -> Result<Box<dyn Optimizer<T>>> {
    fn engine<T: Real, R: rule::Rule>(
        spec: &Spec,
        layout: Layout,
        groups: &[ParamGroup],
        options: Options,
    ) -> Result<Box<dyn Optimizer<T>>> {
        Ok(Box::new(Engine::<T, R>::from_spec(
            spec, layout, groups, options,
        )?))
    }
    match spec.name.as_str() {
        "sgd" | "sgdw" => engine::<T, sgd::Sgd>(spec, layout, groups, options),
        "adagrad" => engine::<T, adagrad::Adagrad>(spec, layout, groups, options),
        "rmsprop" => engine::<T, rmsprop::RmsProp>(spec, layout, groups, options),
        "adam" | "adamw" => engine::<T, adam::Adam>(spec, layout, groups, options),
        "adamax" => engine::<T, adamax::Adamax>(spec, layout, groups, options),
        "nadam" => engine::<T, nadam::NAdam>(spec, layout, groups, options),
        "radam" => engine::<T, radam::RAdam>(spec, layout, groups, options),
        "adadelta" => engine::<T, adadelta::Adadelta>(spec, layout, groups, options),
        "adabound" => engine::<T, adabound::AdaBound>(spec, layout, groups, options),
        "lamb" => engine::<T, lamb::Lamb>(spec, layout, groups, options),
        "lars" => engine::<T, lars::Lars>(spec, layout, groups, options),
        "lion" => engine::<T, lion::Lion>(spec, layout, groups, options),
        "swats" => engine::<T, swats::Swats>(spec, layout, groups, options),
        "adopt" => engine::<T, adopt::Adopt>(spec, layout, groups, options),
        "ademamix" => engine::<T, ademamix::Ademamix>(spec, layout, groups, options),
        "rprop" => engine::<T, rprop::Rprop>(spec, layout, groups, options),
        "asgd" => engine::<T, asgd::Asgd>(spec, layout, groups, options),
        "sgd_schedulefree" | "adamw_schedulefree" => {
            engine::<T, schedule_free::ScheduleFree>(spec, layout, groups, options)
        }
        "lookahead" => Ok(Box::new(lookahead::Lookahead::from_spec(
            spec, layout, groups, options,
        )?)),
        "sam" => Ok(Box::new(sam::Sam::from_spec(
            spec, layout, groups, options,
        )?)),
        "muon" => Ok(Box::new(muon::Muon::from_spec(
            spec, layout, groups, options,
        )?)),
        "adafactor" => Ok(Box::new(adafactor::Adafactor::from_spec(
            spec, layout, groups, options,
        )?)),
        "prodigy" => Ok(Box::new(prodigy::Prodigy::from_spec(
            spec, layout, groups, options,
        )?)),
        "lbfgs" => Ok(Box::new(lbfgs::Lbfgs::from_spec(
            spec, layout, groups, options,
        )?)),
        other => Err(Error::UnknownName {
            what: "optimizer",
            name: other.to_string(),
            spec: spec.to_string(),
            known: OPTIMIZERS.join(", "),
        }),
    }
}

/// The optimizer a wrapper (`lookahead`, `sam`) takes as its first argument; `example`
/// shows the form in the error when it is missing.
pub(crate) fn wrapped_spec(args: &crate::spec::Args, example: &str) -> Result<Spec> {
    let wrapper = args.spec().name.clone();
    match args.positional(0) {
        Some(Value::Spec(s)) => Ok(s.clone()),
        Some(Value::Word(w)) => Ok(Spec::new(w.clone())),
        Some(other) => Err(args.invalid(
            "(inner)",
            format!("the first argument must be an optimizer spec, got {other}"),
        )),
        None => Err(args.invalid(
            "(inner)",
            format!("{wrapper} needs the optimizer it wraps as first argument, e.g. {example}"),
        )),
    }
}

/// Refuses parameters lent as another number of tensors than the layout has.
pub(crate) fn check_param_count<T>(
    name: &str,
    layout: &Layout,
    params: &dyn ParamAccess<T>,
) -> Result<()> {
    let expected = layout.segments().len();
    if params.count() == expected {
        Ok(())
    } else {
        Err(Error::Length {
            what: name.to_string(),
            got: params.count(),
            unit: "parameter tensors",
            expected,
        })
    }
}

/// The error of an optimizer that cannot step without a tensor's gradient.
pub(crate) fn refuse_absent(name: &str, layout: &Layout, seg: usize) -> Error {
    Error::MissingGradient {
        optimizer: name.to_string(),
        tensor: layout
            .segments()
            .get(seg)
            .map_or_else(|| format!("#{seg}"), |s| s.name.clone()),
    }
}

/// Group index of every segment (0 when no group matches).
pub(crate) fn assign_groups(
    layout: &Layout,
    groups: &[ParamGroup],
    options: &Options,
) -> Result<Vec<usize>> {
    // A shard holds pieces of some tensors only: patterns must match in the whole model.
    let model = options.distributed.as_ref().map_or(layout, |d| &*d.full);
    for group in groups {
        for pattern in &group.params {
            if !model
                .segments()
                .iter()
                .any(|s| layout::glob_match(pattern, &s.name))
            {
                return Err(Error::Name {
                    name: pattern.clone(),
                    problem: format!(
                        "parameter group pattern '{pattern}' matches no tensor (tensors: {})",
                        model
                            .segments()
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
    }
    Ok(layout
        .segments()
        .iter()
        .map(|s| {
            groups
                .iter()
                .position(|g| g.params.iter().any(|p| layout::glob_match(p, &s.name)))
                .map_or(0, |i| i + 1)
        })
        .collect())
}
