//! gradlab-candle as a drop-in for a candle user: a `VarMap`-built optimizer with its schedule
//! saved to one file and resumed bit-exactly in a new process (three same-shaped weights, so a
//! mix-up of tensors would show), the unnamed `candle_nn::Optimizer::new` path refusing what it
//! cannot match, parameters without a gradient, typed errors that mix with candle's.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};
use gradlab_candle::{Error, GradlabOptimizer, MissingGradients, NonFinitePolicy, OptimizerConfig};
use std::path::{Path, PathBuf};

/// Three same-shaped layers and a head, as a user would write it.
struct Net {
    layers: Vec<Linear>,
    head: Linear,
}

impl Net {
    fn new(vb: VarBuilder) -> candle_core::Result<Net> {
        let layers = (0..3)
            .map(|i| candle_nn::linear(6, 6, vb.pp(format!("block{i}"))))
            .collect::<candle_core::Result<_>>()?;
        Ok(Net {
            layers,
            head: candle_nn::linear(6, 2, vb.pp("head"))?,
        })
    }

    fn loss(&self, step: usize) -> candle_core::Result<Tensor> {
        let (x, y) = batch(step)?;
        let mut h = x;
        for l in &self.layers {
            h = l.forward(&h)?.tanh()?;
        }
        (self.head.forward(&h)? - y)?.sqr()?.mean_all()
    }
}

/// A deterministic batch for each step.
fn batch(step: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let v = |seed: usize, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    };
    let d = Device::Cpu;
    Ok((
        Tensor::from_vec(v(step, 8 * 6), (8, 6), &d)?,
        Tensor::from_vec(v(step + 1000, 8 * 2), (8, 2), &d)?,
    ))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gradlab-dropin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config() -> OptimizerConfig {
    OptimizerConfig::new("adamw(lr=0.01, weight_decay=0.1)")
        .schedule("warmup_cosine(warmup_steps=3, total_steps=10)")
        .group(["*.bias"], "weight_decay=0")
        .clip_norm(1.0)
}

/// A model whose weights are those saved in `dir/init.safetensors` (made once).
fn model(dir: &Path) -> (VarMap, Net) {
    let mut varmap = VarMap::new();
    let net = Net::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let init = dir.join("init.safetensors");
    if init.exists() {
        varmap.load(&init).unwrap();
    } else {
        varmap.save(&init).unwrap();
    }
    (varmap, net)
}

fn train(net: &Net, opt: &mut GradlabOptimizer, steps: std::ops::Range<usize>) {
    for step in steps {
        opt.backward_step(&net.loss(step).unwrap()).unwrap();
    }
}

fn weights(varmap: &VarMap) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| {
            let values = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (n.clone(), values.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    out.sort();
    out
}

/// The second half of the run, in a process of its own (started by the test below with
/// GRADLAB_DROPIN_CHILD set; a no-op otherwise): loads the model and the optimizer file,
/// trains steps 5..10 and saves the weights.
#[test]
fn child_resumes_from_files() {
    let Ok(dir) = std::env::var("GRADLAB_DROPIN_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (mut varmap, net) = model(&dir);
    varmap.load(dir.join("model.safetensors")).unwrap();
    let mut opt = GradlabOptimizer::load(dir.join("optimizer.safetensors"), &varmap).unwrap();
    train(&net, &mut opt, 5..10);
    varmap.save(dir.join("final.safetensors")).unwrap();
}

#[test]
fn a_varmap_optimizer_resumes_bit_exactly_in_a_new_process() {
    let dir = scratch("resume");
    let (straight_map, net) = model(&dir);
    let mut opt = GradlabOptimizer::from_varmap(&straight_map, &config()).unwrap();
    assert_eq!(opt.group_of("block0.bias"), Some(1));
    assert_eq!(opt.group_of("head.weight"), Some(0));
    assert_eq!(opt.group_of("nothing"), None);
    train(&net, &mut opt, 0..10);
    let want = weights(&straight_map);

    let (first_map, net) = model(&dir);
    let mut opt = GradlabOptimizer::from_varmap(&first_map, &config()).unwrap();
    train(&net, &mut opt, 0..5);
    // Mid-schedule: the configured lr and the scheduled one are both shown.
    let shown = opt.to_string();
    assert!(
        shown.starts_with("adamw(lr=0.01") && shown.contains("[lr now"),
        "{shown}"
    );
    first_map.save(dir.join("model.safetensors")).unwrap();
    opt.save(dir.join("optimizer.safetensors")).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_resumes_from_files", "--test-threads=1"])
        .env("GRADLAB_DROPIN_CHILD", &dir)
        .status()
        .unwrap();
    assert!(status.success());
    let mut resumed = VarMap::new();
    let _ = Net::new(VarBuilder::from_varmap(&resumed, DType::F32, &Device::Cpu)).unwrap();
    resumed.load(dir.join("final.safetensors")).unwrap();
    assert_eq!(weights(&resumed), want, "the resumed run differs");
    let moved = weights(&first_map) != want;
    assert!(moved, "the test trains too little to tell runs apart");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `candle_nn::Optimizer::new(varmap.all_vars(), ...)` has no names: its file carries a
/// fingerprint, and a load into variables in another order (or with other values) is refused
/// instead of sending state to the wrong tensors.
#[test]
fn the_unnamed_path_refuses_a_mismatched_load() {
    use candle_nn::Optimizer;
    let dir = scratch("unnamed");
    let (varmap, net) = model(&dir);
    // One map's order is the same for every call within a process.
    let vars = varmap.all_vars();
    let plain = OptimizerConfig::new("adam(lr=0.01)");
    let mut opt = GradlabOptimizer::new(vars.clone(), plain.clone()).unwrap();
    train(&net, &mut opt, 0..3);
    let file = dir.join("opt.safetensors");
    opt.save(&file).unwrap();
    // Same order, same values: accepted.
    let mut same = GradlabOptimizer::new(vars.clone(), plain.clone()).unwrap();
    same.resume_from(&file).unwrap();
    // Two same-shaped weights swapped: refused, naming the cause.
    let mut swapped = vars.clone();
    let (i, j) = (0..swapped.len())
        .flat_map(|i| (i + 1..swapped.len()).map(move |j| (i, j)))
        .find(|&(i, j)| swapped[i].dims() == swapped[j].dims())
        .unwrap();
    swapped.swap(i, j);
    let mut other = GradlabOptimizer::new(swapped, plain.clone()).unwrap();
    let err = other.resume_from(&file).unwrap_err().to_string();
    assert!(
        err.contains("another order") && err.contains("from_varmap"),
        "{err}"
    );
    // Values changed since the save (weights not restored): refused.
    train(&net, &mut opt, 3..4);
    let mut stale = GradlabOptimizer::new(vars.clone(), plain.clone()).unwrap();
    let err = stale.resume_from(&file).unwrap_err().to_string();
    assert!(err.contains("values differ"), "{err}");
    // A named file cannot be loaded without names, and the reverse.
    let err = GradlabOptimizer::load(&file, &varmap)
        .unwrap_err()
        .to_string();
    assert!(err.contains("without names"), "{err}");
    // Groups by name need names; groups by variable work without.
    let err = GradlabOptimizer::new(vars.clone(), plain.clone().group(["*.bias"], "lr=0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("group_vars") && err.contains("from_varmap"),
        "{err}"
    );
    let head_bias = varmap.data().lock().unwrap()["head.bias"].clone();
    let frozen = plain
        .clone()
        .group_vars(std::slice::from_ref(&head_bias), "lr=0");
    let mut opt = GradlabOptimizer::new(vars, frozen).unwrap();
    let before = head_bias.as_tensor().to_vec1::<f32>().unwrap();
    train(&net, &mut opt, 0..2);
    assert_eq!(head_bias.as_tensor().to_vec1::<f32>().unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A parameter the loss does not use sits out the step (PyTorch's `p.grad is None`); with
/// `MissingGradients::Error` the step fails naming it. An empty optimizer steps.
#[test]
fn parameters_without_a_gradient_sit_out_the_step() {
    let d = Device::Cpu;
    let used = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &d).unwrap()).unwrap();
    let unused = Var::from_tensor(&Tensor::new(&[3.0f32], &d).unwrap()).unwrap();
    let named = vec![
        ("used".to_string(), used.clone()),
        ("unused".to_string(), unused.clone()),
    ];
    let loss = || used.as_tensor().sqr().unwrap().sum_all().unwrap();
    let mut opt =
        GradlabOptimizer::with_names(named.clone(), &OptimizerConfig::new("adam(lr=0.1)")).unwrap();
    opt.backward_step(&loss()).unwrap();
    assert_eq!(unused.as_tensor().to_vec1::<f32>().unwrap(), [3.0]);
    let moved = used.as_tensor().to_vec1::<f32>().unwrap();
    assert!(
        (moved[0] - 0.9).abs() < 1e-6 && (moved[1] + 1.9).abs() < 1e-6,
        "{moved:?}"
    );
    let strict = OptimizerConfig::new("adam(lr=0.1)").missing_gradients(MissingGradients::Error);
    let mut opt = GradlabOptimizer::with_names(named, &strict).unwrap();
    match opt.backward_step(&loss()) {
        Err(Error::NoGradient { name }) => assert_eq!(name, "unused"),
        other => panic!("{other:?}"),
    }
    let mut empty = GradlabOptimizer::with_names(Vec::new(), &OptimizerConfig::new("sgd")).unwrap();
    empty.step_grads(&loss().backward().unwrap()).unwrap();
}

/// Errors convert both ways, so `?` works in a candle user's functions; bad parameters and
/// configs are refused when the optimizer is built.
#[test]
fn errors_mix_with_candles_and_bad_parameters_are_refused_at_construction() {
    fn user_code() -> candle_core::Result<GradlabOptimizer> {
        let v = Var::new(&[1.0f32], &Device::Cpu)?;
        let opt =
            GradlabOptimizer::with_names(vec![("w".into(), v)], &OptimizerConfig::new("adamm"))?;
        Ok(opt)
    }
    let err = user_code().err().unwrap().to_string();
    assert!(err.contains("adamm"), "{err}");
    fn bridge_code() -> gradlab_candle::Result<f32> {
        let t = Tensor::new(&[2.0f32], &Device::Cpu)?;
        Ok(t.to_vec1::<f32>()?[0])
    }
    assert_eq!(bridge_code().unwrap(), 2.0);

    let d = Device::Cpu;
    let int = Var::from_tensor(&Tensor::new(&[1u32], &d).unwrap()).unwrap();
    let err = GradlabOptimizer::with_names(vec![("i".into(), int)], &OptimizerConfig::new("sgd"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("'i'") && err.contains("U32"), "{err}");
    let one = Var::new(&[1.0f32], &d).unwrap();
    let half = Var::from_tensor(&one.as_tensor().to_dtype(DType::F16).unwrap()).unwrap();
    let mixed = vec![("a".to_string(), one), ("b".to_string(), half)];
    let err = GradlabOptimizer::with_names(mixed, &OptimizerConfig::new("sgd"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("'b' is F16"), "{err}");
    let v = Var::new(&[1.0f32], &d).unwrap();
    for (config, needle) in [
        (OptimizerConfig::new("sgd").clip_norm(-1.0), "clip_norm"),
        (OptimizerConfig::new("sgd").group(["*"], "lr=oops"), "lr"),
        (
            OptimizerConfig::new("sgd").schedule("cosine(t_max=0)"),
            "t_max",
        ),
        (
            OptimizerConfig::new("sgd")
                .nonfinite(NonFinitePolicy::Skip)
                .schedule("nope"),
            "nope",
        ),
    ] {
        let err = GradlabOptimizer::with_names(vec![("w".into(), v.clone())], &config)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let twice = vec![("w".to_string(), v.clone()), ("w".to_string(), v)];
    let err = GradlabOptimizer::with_names(twice, &OptimizerConfig::new("sgd"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("twice"), "{err}");
}

/// bf16 and f16 parameters step through f32 master copies: updates below the 16-bit
/// resolution accumulate instead of being lost, the master copies resume bit for bit from a
/// saved file, and a value set from outside is taken up.
#[test]
fn sixteen_bit_parameters_step_through_f32_master_copies() {
    let d = Device::Cpu;
    for dtype in [DType::BF16, DType::F16] {
        let w = Var::from_tensor(&Tensor::ones(4, dtype, &d).unwrap()).unwrap();
        let named = vec![("w".to_string(), w.clone())];
        let loss = || w.as_tensor().sum_all().unwrap(); // gradient 1 everywhere
        let mut opt =
            GradlabOptimizer::with_names(named.clone(), &OptimizerConfig::new("sgd(lr=0.0001)"))
                .unwrap();
        for _ in 0..100 {
            opt.backward_step(&loss()).unwrap();
        }
        // 100 steps of 1e-4 from 1: 0.99, below 1 by more than one 16-bit step there.
        let got = w
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = Tensor::new(&[0.99f32], &d)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let want = want.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(
            got.iter().all(|&x| x == want),
            "{dtype:?}: {got:?} vs {want}"
        );

        // Adam with a schedule: 6 steps straight vs 3 + save + 3.
        let dir = scratch(&format!("half-{dtype:?}"));
        let start = Tensor::new(&[0.3f32, -1.2, 2.5, 0.01], &d)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let cfg = OptimizerConfig::new("adam(lr=0.003)").schedule("cosine(t_max=6)");
        let run = |steps: std::ops::Range<usize>, v: &Var, opt: &mut GradlabOptimizer| {
            for s in steps {
                let target = Tensor::new(&[s as f32 * 0.1; 4], &d)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let l = (v.as_tensor() - target)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.backward_step(&l).unwrap();
            }
        };
        let a = Var::from_tensor(&start).unwrap();
        let mut straight =
            GradlabOptimizer::with_names(vec![("w".into(), a.clone())], &cfg).unwrap();
        run(0..6, &a, &mut straight);
        let b = Var::from_tensor(&start).unwrap();
        let mut first = GradlabOptimizer::with_names(vec![("w".into(), b.clone())], &cfg).unwrap();
        run(0..3, &b, &mut first);
        first.save(dir.join("opt.safetensors")).unwrap();
        let c = Var::from_tensor(b.as_tensor()).unwrap();
        let mut second = GradlabOptimizer::with_names(vec![("w".into(), c.clone())], &cfg).unwrap();
        second.resume_from(dir.join("opt.safetensors")).unwrap();
        run(3..6, &c, &mut second);
        let bits = |v: &Var| {
            v.as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(bits(&a), bits(&c), "{dtype:?}: resumed run differs");
        std::fs::remove_dir_all(dir).unwrap();

        // A value set from outside is the next step's starting point.
        w.set(
            &Tensor::new(&[5.0f32; 4], &d)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let mut opt =
            GradlabOptimizer::with_names(named.clone(), &OptimizerConfig::new("sgd(lr=0.5)"))
                .unwrap();
        w.set(
            &Tensor::new(&[2.0f32; 4], &d)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        opt.backward_step(&loss()).unwrap();
        assert_eq!(bits(&w), [1.5; 4], "{dtype:?}");
    }
}

/// On request, each step reports every parameter's gradient norm and update against its
/// weight; the step's own outcome has the global norm and the clipping.
#[test]
fn a_step_reports_what_users_log() {
    let d = Device::Cpu;
    let a = Var::new(&[3.0f32, 4.0], &d).unwrap();
    let b = Var::new(&[1.0f32, 0.0, 0.0], &d).unwrap();
    let unused = Var::new(&[2.0f32], &d).unwrap();
    let named = vec![
        ("a".to_string(), a.clone()),
        ("b".to_string(), b.clone()),
        ("unused".to_string(), unused),
    ];
    // loss = Σ a·(1, 2) + Σ b·(2, 0, 0): gradients (1, 2) and (2, 0, 0).
    let loss = || {
        let wa = Tensor::new(&[1.0f32, 2.0], &d).unwrap();
        let wb = Tensor::new(&[2.0f32, 0.0, 0.0], &d).unwrap();
        ((a.as_tensor() * wa).unwrap().sum_all().unwrap()
            + (b.as_tensor() * wb).unwrap().sum_all().unwrap())
        .unwrap()
    };
    let mut opt =
        GradlabOptimizer::with_names(named, &OptimizerConfig::new("sgd(lr=0.1)").clip_norm(1.5))
            .unwrap();
    opt.backward_step(&loss()).unwrap();
    assert!(opt.tensor_stats().is_empty(), "figures without being asked");
    opt.track_tensors(true);
    let outcome = opt.backward_step(&loss()).unwrap();
    assert!((outcome.grad_norm - 3.0).abs() < 1e-6, "{outcome:?}");
    assert!((outcome.clip_coef - 0.5).abs() < 1e-6, "{outcome:?}");
    let stats = opt.tensor_stats();
    let by = |n: &str| stats.iter().find(|s| s.name == n).unwrap().clone();
    let (sa, sb, su) = (by("a"), by("b"), by("unused"));
    assert!((sa.grad_norm.unwrap() - 5f64.sqrt()).abs() < 1e-6);
    assert!((sb.grad_norm.unwrap() - 2.0).abs() < 1e-6);
    // Clipped by 0.5, lr 0.1: the update is 0.05 times the gradient.
    assert!((sa.update_norm - 0.05 * 5f64.sqrt()).abs() < 1e-6, "{sa:?}");
    assert!(
        (sb.update_ratio() - 0.1 / sb.weight_norm).abs() < 1e-6,
        "{sb:?}"
    );
    assert_eq!(
        (su.grad_norm, su.update_norm, su.update_ratio()),
        (None, 0.0, 0.0)
    );
    opt.track_tensors(false);
    opt.backward_step(&loss()).unwrap();
    assert!(opt.tensor_stats().is_empty());
}
