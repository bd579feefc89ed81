//! gradlab's diagnostics on a model gradlab does not know: a candle user's own `Module`.
//! Its Hessian comes from a closure that builds the loss; double backward is used inside
//! `with_second_order` and agrees with finite differences; outside it (a thread whose
//! gradients are detached) the operator says so and falls back instead of returning zeros.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab_candle::hessian::{with_second_order, HvpMethod, NetworkHessian};

struct TwoLayer {
    a: Linear,
    b: Linear,
}

impl Module for TwoLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.b.forward(&self.a.forward(x)?.tanh()?)
    }
}

fn setup() -> (VarMap, TwoLayer, Tensor, Tensor) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let model = TwoLayer {
        a: candle_nn::linear(3, 5, vb.pp("a")).unwrap(),
        b: candle_nn::linear(5, 2, vb.pp("b")).unwrap(),
    };
    let d = Device::Cpu;
    let x: Vec<f64> = (0..24)
        .map(|i| ((i * 37 % 11) as f64) / 5.0 - 1.0)
        .collect();
    let y: Vec<f64> = (0..16).map(|i| ((i * 13 % 7) as f64) / 3.0 - 1.0).collect();
    (
        varmap,
        model,
        Tensor::from_vec(x, (8, 3), &d).unwrap(),
        Tensor::from_vec(y, (8, 2), &d).unwrap(),
    )
}

fn named(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let mut v: Vec<_> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn top(h: &mut NetworkHessian) -> f64 {
    let opts = LanczosOptions {
        top: 1,
        bottom: 0,
        tol: 1e-10,
        max_iter: None,
        seed: 3,
    };
    lanczos(h, &opts).unwrap().top[0].value
}

#[test]
fn a_users_module_has_its_hessian_by_double_backward() {
    let (varmap, model, x, y) = setup();
    let loss =
        || -> gradlab_candle::Result<Tensor> { Ok((model.forward(&x)? - &y)?.sqr()?.mean_all()?) };
    // A thread that already ran a backward pass without the flag: its double backward is
    // detached; the operator notes it and uses finite differences.
    let params = named(&varmap);
    std::thread::scope(|s| {
        s.spawn(|| {
            loss().unwrap().backward().unwrap();
            let h = NetworkHessian::of_loss(params.clone(), loss).unwrap();
            assert_eq!(h.method(), HvpMethod::FiniteDifference);
            let note = h.note.clone().unwrap_or_default();
            assert!(
                note.contains("detached") && note.contains("with_second_order"),
                "{note}"
            );
        });
    });
    let (exact, fd, cross_check) = with_second_order(|| {
        let mut h = NetworkHessian::of_loss(params.clone(), loss).unwrap();
        assert_eq!(h.method(), HvpMethod::DoubleBackward, "{:?}", h.note);
        h.check_symmetric().unwrap();
        let exact = top(&mut h);
        h.set_method(HvpMethod::FiniteDifference).unwrap();
        (exact, top(&mut h), h.cross_check)
    });
    assert!(exact > 0.0 && cross_check < 1e-6, "{exact} {cross_check}");
    assert!(
        (exact - fd).abs() <= 1e-5 * exact,
        "double backward {exact} vs finite differences {fd}"
    );
}

/// EMA and SWA over a user's variables: the formulas by hand, the raw weights restored, and
/// the recompute hook running with the average in place.
#[test]
fn averages_of_a_users_variables() {
    use gradlab_candle::averaging::{Ema, Swa};
    let (varmap, model, x, _) = setup();
    let vars: Vec<candle_core::Var> = named(&varmap).into_iter().map(|(_, v)| v).collect();
    let first = vars[0]
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let mut ema = Ema::new(&vars, 0.5).unwrap();
    let mut swa = Swa::new(&vars);
    assert!(
        swa.with_average(|| Ok(())).is_err(),
        "an empty SWA average was usable"
    );
    let mut seen = vec![first.clone()];
    for k in 1..=2 {
        for v in &vars {
            v.set(&(v.as_tensor() + k as f64).unwrap()).unwrap();
        }
        ema.update().unwrap();
        swa.update().unwrap();
        seen.push(
            vars[0]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap(),
        );
    }
    let ema0 = ema.average()[0]
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (i, e) in ema0.iter().enumerate() {
        let want = 0.25 * seen[0][i] + 0.25 * seen[1][i] + 0.5 * seen[2][i];
        assert!((e - want).abs() < 1e-12);
    }
    let raw = model.forward(&x).unwrap().to_vec2::<f64>().unwrap();
    let mut recomputed = false;
    let during = swa
        .with_average_recomputed(
            || {
                recomputed = true;
                Ok(())
            },
            || Ok(vars[0].as_tensor().flatten_all()?.to_vec1::<f64>()?),
        )
        .unwrap();
    assert!(recomputed);
    for (i, d) in during.iter().enumerate() {
        assert!((d - 0.5 * (seen[1][i] + seen[2][i])).abs() < 1e-12);
    }
    assert_eq!(model.forward(&x).unwrap().to_vec2::<f64>().unwrap(), raw);
    assert!(Ema::new(&vars, 1.0).is_err());
}

/// `examples/candle_user.rs` (built by `cargo test`) trains a user's MLP, resumes it from
/// files and prints its top Hessian eigenvalue.
#[test]
fn the_candle_user_example_runs() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("candle_user"))
        .unwrap();
    assert!(example.exists(), "{} was not built", example.display());
    let out = std::process::Command::new(&example).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let accuracy: f64 = text
        .lines()
        .rev()
        .find_map(|l| l.split("test acc:").nth(1))
        .and_then(|s| s.trim().split('%').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {text}"));
    assert!(accuracy > 85.0, "{text}");
    assert!(text.contains("top Hessian eigenvalue"), "{text}");
}
