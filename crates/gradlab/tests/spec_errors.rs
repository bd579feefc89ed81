//! Bad optimizer specs get errors that name the problem; specs round-trip canonically.

use gradlab::optim::{self, Layout, Options, OPTIMIZERS};
use gradlab::spec::{self, Spec, Value};
use proptest::prelude::*;

/// SGD with momentum on two parameters, for the schedule tests.
fn sgd_with_momentum() -> Box<dyn optim::Optimizer<f64>> {
    optim::build::<f64>(
        "sgd(lr=0.1, momentum=0.9)",
        Layout::single("w", 2),
        &[],
        Options::default(),
    )
    .unwrap()
}

fn error_of(spec: &str) -> String {
    match optim::build::<f64>(spec, Layout::single("w", 2), &[], Options::default()) {
        Ok(_) => panic!("'{spec}' was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_names_and_keys_list_the_valid_ones() {
    let e = error_of("adamm(lr=0.1)");
    assert!(
        e.contains("unknown optimizer 'adamm'") && e.contains("adamw") && e.contains("lookahead"),
        "{e}"
    );
    let e = error_of("adam(lr=0.1, beta1=0.9)");
    assert!(
        e.contains("unknown key 'beta1'") && e.contains("betas") && e.contains("amsgrad"),
        "{e}"
    );
    let e = error_of("adamw(lr=0.1, decoupled_weight_decay=true)");
    assert!(e.contains("unknown key 'decoupled_weight_decay'"), "{e}");
    let e = error_of("lookahead(adam(lr=0.1), kk=3)");
    assert!(e.contains("unknown key 'kk'") && e.contains("alpha"), "{e}");
    let e = error_of("lookahead(adam(lr=0.1, foo=1))");
    assert!(e.contains("unknown key 'foo'"), "{e}");
    let e = error_of("lookahead(k=3)");
    assert!(e.contains("the optimizer it wraps"), "{e}");
    let e = error_of("sam(rho=0.1)");
    assert!(e.contains("the optimizer it wraps"), "{e}");
    let e = error_of("sgd(0.1)");
    assert!(e.contains("positional"), "{e}");
}

#[test]
fn wrong_types_are_named() {
    for (spec, needle) in [
        ("adam(lr=fast)", "'lr'"),
        ("adam(amsgrad=1)", "true or false"),
        ("adam(betas=0.9)", "pair of numbers"),
        ("adam(betas=(0.9, 0.99, 0.999))", "pair of numbers"),
        ("sgd(momentum=(0.9, 0.1))", "must be a number"),
        ("lookahead(adam, k=2.5)", "whole number"),
    ] {
        let e = error_of(spec);
        assert!(e.contains(needle), "{spec}: {e}");
    }
}

#[test]
fn out_of_range_values_are_rejected_as_pytorch_does() {
    for (spec, needle) in [
        ("sgd(lr=-0.1)", "'lr'"),
        ("adam(eps=-1e-8)", "'eps'"),
        ("adam(betas=(1.0, 0.999))", "index 0"),
        ("adam(betas=(0.9, -0.1))", "index 1"),
        ("nadam(betas=(0.9, 1.5))", "index 1"),
        ("sgd(lr=0.1, nesterov=true)", "Nesterov"),
        (
            "sgd(lr=0.1, momentum=0.9, dampening=0.1, nesterov=true)",
            "Nesterov",
        ),
        ("sgd(momentum=-0.5)", "'momentum'"),
        ("adam(weight_decay=-1)", "'weight_decay'"),
        ("adadelta(rho=1.5)", "'rho'"),
        ("rmsprop(alpha=-0.1)", "'alpha'"),
        ("adagrad(lr_decay=-1)", "'lr_decay'"),
        ("lookahead(sgd, k=0)", "'k'"),
        ("lookahead(sgd, alpha=2)", "'alpha'"),
        ("lookahead(lookahead(sgd))", "another lookahead"),
        ("lars(trust_coefficient=-1)", "'trust_coefficient'"),
    ] {
        let e = error_of(spec);
        assert!(e.contains(needle), "{spec}: {e}");
        assert!(
            e.contains(&spec::parse(spec).unwrap().to_string()),
            "{spec}: the error should quote the spec: {e}"
        );
    }
}

#[test]
fn syntax_errors_name_the_column() {
    let e = error_of("adam(lr=0.1,, eps=1)");
    assert!(e.contains("column 13"), "{e}");
}

#[test]
fn canonical_specs_of_every_optimizer_rebuild_the_same_optimizer() {
    for name in OPTIMIZERS {
        let text = match *name {
            "lookahead" | "sam" => format!("{name}(adam)"),
            _ => name.to_string(),
        };
        let layout = match *name {
            "muon" => Layout::new([("w", vec![3, 1])]).unwrap(),
            _ => Layout::single("w", 3),
        };
        let opt = optim::build::<f64>(&text, layout.clone(), &[], Options::default()).unwrap();
        let canonical = opt.spec().to_string();
        let again = optim::build::<f64>(&canonical, layout, &[], Options::default()).unwrap();
        assert_eq!(again.spec().to_string(), canonical);
        assert_eq!(opt.name(), *name);
    }
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (-1e6f64..1e6).prop_map(Value::Num),
        (1e-12f64..1e-4).prop_map(Value::Num),
        any::<bool>().prop_map(Value::Bool),
        "[a-z][a-z0-9_]{0,8}"
            .prop_filter("reserved words", |w| !matches!(
                w.as_str(),
                "true" | "false" | "inf"
            ))
            .prop_map(Value::Word),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Tuple),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            (
                "[a-z]{1,6}",
                prop::collection::vec(("[a-z_]{1,6}", inner), 0..3)
            )
                .prop_map(|(name, args)| {
                    let mut spec = Spec::new(name);
                    for (k, v) in args {
                        if spec.get(&k).is_none() {
                            spec.args.push((Some(k), v));
                        }
                    }
                    Value::Spec(spec)
                }),
        ]
    })
}

proptest! {
    #[test]
    fn printing_then_parsing_gives_the_same_spec(
        name in "[a-z][a-z0-9_]{0,8}",
        args in prop::collection::vec(("[a-z_][a-z0-9_]{0,6}", value_strategy()), 0..5),
    ) {
        let mut spec = Spec::new(name);
        for (k, v) in args {
            if spec.get(&k).is_none() {
                spec.args.push((Some(k), v));
            }
        }
        let printed = spec.to_string();
        let parsed = spec::parse(&printed).unwrap();
        prop_assert_eq!(&parsed, &spec);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
        let _ = spec::parse(&text);
        let _ = optim::build::<f32>(&text, Layout::single("w", 1), &[], Options::default());
        let _ = gradlab::schedule::build(&text);
    }
}

/// Specs made of the spec language's own tokens: real names, keys and numbers (some out
/// of range, overflowing or malformed) in random, often broken order.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "adam",
            "adamw",
            "sgd",
            "lion",
            "lookahead",
            "sam",
            "muon",
            "lbfgs",
            "cosine",
            "onecycle",
            "wsd",
            "plateau",
            "sequential",
            "chained",
            "warmup",
            "exponential",
            "swalr",
            "cyclic",
        ]),
        prop::sample::select(vec![
            "lr",
            "betas",
            "eps",
            "momentum",
            "weight_decay",
            "nesterov",
            "gamma",
            "t_max",
            "eta_min",
            "factor",
            "inner",
            "k",
            "alpha",
            "rho",
            "base",
            "milestones",
            "anneal_epochs",
            "max_lr",
            "total_steps",
            "power",
        ]),
        prop::sample::select(vec![
            "(",
            ")",
            ",",
            "=",
            "[",
            "]",
            " ",
            "0",
            "1",
            "-1",
            "0.9",
            "1e-3",
            "1e400",
            "inf",
            "nan",
            "-0",
            "1e-400",
            "true",
            "false",
            "(0.9, 0.999)",
            "2.",
            ".5",
            "1_0",
            "'",
        ]),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn token_soup_is_built_or_refused_never_a_panic(text in token_soup()) {
        let built = optim::build::<f64>(&text, Layout::single("w", 2), &[], Options::default());
        if let Err(e) = &built {
            prop_assert!(!e.to_string().is_empty());
        }
        // A schedule that is accepted drives the learning rate through finite, non-negative
        // values, or stops with an error.
        let mut opt = sgd_with_momentum();
        if let Ok(mut s) = gradlab::schedule::Scheduler::new(&text, opt.as_mut()) {
            for _ in 0..40 {
                let lr = opt.lr(0);
                prop_assert!(lr.is_finite() && lr >= 0.0, "{}: lr {}", text, lr);
                let stepped = if s.needs_metric() {
                    s.step_with_metric(opt.as_mut(), 1.0)
                } else {
                    s.step(opt.as_mut())
                };
                if stepped.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn values_outside_their_domain_are_refused_with_the_key_and_range() {
    for (spec, key, says) in [
        ("sgd(lr=inf)", "'lr'", "finite"),
        ("sgd(lr=-0.1)", "'lr'", ">= 0"),
        ("adam(eps=inf)", "'eps'", "finite"),
        ("sgd(lr=0.1, momentum=1)", "'momentum'", "[0, 1)"),
        ("rmsprop(alpha=1)", "'alpha'", "[0, 1)"),
        ("adadelta(rho=1)", "'rho'", "[0, 1)"),
        ("lars(momentum=1.5)", "'momentum'", "[0, 1)"),
        ("lookahead(sgd, alpha=0)", "'alpha'", "(0, 1]"),
        ("adam(betas=(0.9, 1))", "index 1", "[0, 1)"),
        ("adamw(weight_decay=-1)", "'weight_decay'", ">= 0"),
        (
            "sgd(lr=0.1, momentum=0.9, dampening=2)",
            "'dampening'",
            "[0, 1]",
        ),
        ("sgd(lr=0.1, dampening=-0.5)", "'dampening'", "[0, 1]"),
        (
            "lars(lr=0.1, trust_coefficient=0)",
            "'trust_coefficient'",
            "> 0",
        ),
        ("adopt(betas=(0.9, 1))", "index 1", "[0, 1)"),
        ("ademamix(betas=(0.9, 0.999, 1))", "index 2", "[0, 1)"),
        ("ademamix(betas=(0.9, 0.999))", "'betas'", "three numbers"),
        ("ademamix(t_alpha_beta3=0)", "'t_alpha_beta3'", "> 0"),
        (
            "ademamix(betas=(0, 0.999, 0.9999), t_alpha_beta3=100)",
            "'betas'",
            "(0, 1) with t_alpha_beta3",
        ),
        ("rprop(etas=(1.2, 0.5))", "'etas'", "0 < η− < 1 < η+"),
        ("rprop(etas=(0.5, 1))", "'etas'", "0 < η− < 1 < η+"),
        ("rprop(step_sizes=(1, 0.1))", "'step_sizes'", "min <= max"),
        ("rprop(step_sizes=(-1, 1))", "index 0", ">= 0"),
        ("asgd(alpha=-1)", "'alpha'", ">= 0"),
        ("asgd(t0=-5)", "'t0'", ">= 0"),
    ] {
        let e = error_of(spec);
        assert!(e.contains(key) && e.contains(says), "{spec}: {e}");
    }
    let e = error_of("sgd(lr=1e400)");
    assert!(e.contains("overflows") && e.contains("column 8"), "{e}");
}

#[test]
fn schedules_never_produce_a_negative_or_non_finite_lr() {
    use gradlab::schedule::Scheduler;
    let schedule_error = |s: &str| {
        let mut opt = sgd_with_momentum();
        let mut sched = match Scheduler::new(s, opt.as_mut()) {
            Err(e) => return e.to_string(),
            Ok(sched) => sched,
        };
        for _ in 0..50 {
            if let Err(e) = sched.step(opt.as_mut()) {
                return e.to_string();
            }
        }
        panic!("'{s}' was accepted");
    };
    for (spec, says) in [
        ("exponential(gamma=-1)", "'gamma'"),
        ("cosine(t_max=10, eta_min=-1)", "'eta_min'"),
        ("polynomial(power=-1)", "'power'"),
        ("sgdr(t_0=5, eta_min=-0.5)", "'eta_min'"),
        ("exponential(gamma=1e400)", "overflows"),
        ("onecycle(max_lr=inf, total_steps=10)", "'max_lr'"),
        (
            "cyclic(base_lr=0.1, max_lr=1, step_size_up=2, mode=exp_range, gamma=1e300)",
            "which must be",
        ),
        (
            "cyclic(base_lr=0.1, max_lr=0.01)",
            "max_lr must be at least base_lr",
        ),
        ("constant(factor=0)", "'factor'"),
        ("constant(factor=1.5)", "'factor'"),
        ("noam(d_model=16, warmup=4, factor=-1)", "'factor'"),
    ] {
        let e = schedule_error(spec);
        assert!(e.contains(says), "{spec}: {e}");
    }
}

#[test]
fn onecycle_holds_its_final_lr_after_its_last_step() {
    use gradlab::schedule::Scheduler;
    let mut opt = sgd_with_momentum();
    let mut sched = Scheduler::new(
        "onecycle(max_lr=0.01, total_steps=5, anneal_strategy=linear)",
        opt.as_mut(),
    )
    .unwrap();
    for _ in 0..5 {
        sched.step(opt.as_mut()).unwrap();
    }
    let lr = opt.lr(0);
    assert!((0.0..1e-6).contains(&lr), "{lr}");
    assert!(sched
        .step(opt.as_mut())
        .unwrap_err()
        .to_string()
        .contains("the cycle is over"));
}

#[test]
fn errors_quote_long_specs_in_part() {
    let deep = format!(
        "{}sgd(lr=0.1){}",
        "lookahead(inner=".repeat(5000),
        ")".repeat(5000)
    );
    let e = error_of(&deep);
    assert!(
        e.len() < 300 && e.contains("nested more than"),
        "{} bytes: {}",
        e.len(),
        &e[..300.min(e.len())]
    );
    let long_key = format!("adam(lr=0.1, {}=1)", "k".repeat(5000));
    let e = error_of(&long_key);
    assert!(
        e.len() < 6000 && e.contains("characters)"),
        "{} bytes",
        e.len()
    );
}
