//! Errors come as kinds a program can act on (the tensor, the counts, the optimizer), each
//! reached the way a user reaches it; the words say the same.

use gradlab::optim::{self, Layout, Optimizer, Options, ParamGroup};
use gradlab::Error;

fn layout() -> Layout {
    Layout::new([("fc.weight", vec![4, 3]), ("fc.bias", vec![4])]).unwrap()
}

fn build(spec: &str, groups: &[ParamGroup]) -> gradlab::Result<Box<dyn Optimizer<f64>>> {
    optim::build::<f64>(spec, layout(), groups, Options::default())
}

#[test]
fn a_count_that_does_not_match_gives_both_counts() {
    let mut opt = build("sgd(lr=0.1)", &[]).unwrap();
    let (mut w, mut b) = (vec![0.0; 12], vec![0.0; 4]);
    let err = opt
        .step(&mut [&mut w, &mut b], &[&[0.0; 12], &[0.0; 5]])
        .unwrap_err();
    let text = err.to_string();
    match err {
        Error::Length {
            what,
            got: 5,
            expected: 4,
            ..
        } => assert!(what.contains("'fc.bias'"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert!(text.contains("5") && text.contains("expected 4"), "{text}");
    let err = opt.step(&mut [&mut w], &[&[0.0; 12]]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Length {
                got: 1,
                expected: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_name_given_twice_or_a_pattern_matching_nothing_is_a_name_error() {
    match Layout::new([("w", vec![2]), ("w", vec![3])]) {
        Err(Error::Name { name, problem }) => {
            assert_eq!(name, "w");
            assert!(problem.contains("twice"), "{problem}");
        }
        other => panic!("{:?}", other.err()),
    }
    let group = ParamGroup {
        params: vec!["conv*".into()],
        overrides: Vec::new(),
    };
    match build("sgd(lr=0.1)", &[group]) {
        Err(Error::Name { name, problem }) => {
            assert_eq!(name, "conv*");
            assert!(problem.contains("fc.weight, fc.bias"), "{problem}");
        }
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_call_the_optimizer_does_not_take_is_unsupported_with_the_way_out() {
    let mut opt = build("lbfgs", &[]).unwrap();
    let (mut w, mut b) = (vec![0.0; 12], vec![0.0; 4]);
    match opt.step(&mut [&mut w, &mut b], &[&[0.0; 12], &[0.0; 4]]) {
        Err(Error::Unsupported { what, reason }) => {
            assert_eq!(what, "lbfgs");
            assert!(reason.contains("step_with_closure"), "{reason}");
        }
        other => panic!("{:?}", other.err()),
    }
    let clipped = Options {
        clip_norm: Some(1.0),
        ..Options::default()
    };
    let err = optim::build::<f64>("lbfgs", layout(), &[], clipped).err();
    assert!(
        matches!(&err, Some(Error::Unsupported { reason, .. }) if reason.contains("clipping")),
        "{err:?}"
    );
}

#[test]
fn a_size_beyond_memory_is_a_memory_error_with_the_figures() {
    let err = gradlab::memory::check_fits("a model of 1e30 parameters", None).unwrap_err();
    assert!(matches!(err, Error::Memory { needed: None, .. }), "{err:?}");
    assert!(err.to_string().contains("128-bit"), "{err}");
    let bytes = 4 * 10u128.pow(16);
    match gradlab::memory::check_fits("a model of 1e16 parameters", Some(bytes)) {
        Err(Error::Memory {
            needed, available, ..
        }) => {
            assert_eq!(needed, Some(bytes));
            assert!(available.is_some_and(|a| (a as u128) < bytes));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_learning_rate_out_of_range_names_optimizer_group_and_key() {
    let mut opt = build("adam(lr=0.01)", &[]).unwrap();
    opt.hypers_mut()[0].lr = -1.0;
    let (mut w, mut b) = (vec![0.0; 12], vec![0.0; 4]);
    match opt.step(&mut [&mut w, &mut b], &[&[0.0; 12], &[0.0; 4]]) {
        Err(Error::OutOfRange { key, value, .. }) => {
            assert!(key.contains("lr") && key.contains("adam"), "{key}");
            assert_eq!(value, -1.0);
        }
        other => panic!("{:?}", other.err()),
    }
}
