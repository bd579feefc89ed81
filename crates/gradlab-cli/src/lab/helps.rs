//! Study: what helps optimization — one ablation per technique of the lecture's list
//! (shuffling, dropout, gradient noise, warm-up, curriculum learning, fine-tuning,
//! normalization, regularization) on the same network, budget and seeds, each effect set
//! against the seed noise.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::Path2;
use anyhow::{Context, Result};
use candle_core::D;
use gradlab_candle::checkpoint::load_model;
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, batch, Curriculum, DataOrder, TrainConfig};
use std::path::Path;

/// The optimizer every ablation shares.
const BASE_OPTIMIZER: &str = "sgd(lr=0.05, momentum=0.9)";

/// One technique's runs (one per seed) and what they measured.
struct Arm {
    technique: &'static str,
    /// What was changed, in words.
    change: String,
    runs: Vec<Run>,
}

/// Per-seed figures of an arm: final train loss, test accuracy, steps to the target loss.
struct Figures {
    loss: SeedStats,
    accuracy: SeedStats,
    steps: Vec<Option<f64>>,
}

impl Arm {
    fn figures(&self, target: f64) -> Figures {
        let loss: Vec<f64> = self.runs.iter().map(Run::train_loss).collect();
        let accuracy: Vec<f64> = self.runs.iter().map(Run::test_accuracy).collect();
        Figures {
            loss: SeedStats::of(&loss),
            accuracy: SeedStats::of(&accuracy),
            steps: self.runs.iter().map(|r| steps_to(r, target)).collect(),
        }
    }
}

/// The first step at which the training loss, averaged over 10 steps, is at most `target`.
fn steps_to(run: &Run, target: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = run.steps.iter().map(|s| (s.0, s.1)).collect();
    windowed(&points, 10)
        .into_iter()
        .find(|p| p.1 <= target)
        .map(|p| p.0)
}

/// Study: what helps optimization.
pub fn helps(out: &Path, budget: &Budget) -> Result<Section> {
    let seeds = budget.seeds.max(3);
    let small = Budget {
        epochs: budget.epochs.min(2),
        seeds,
        ..budget.clone()
    };
    let steps_per_epoch = budget.train_limit.unwrap_or(8000).div_ceil(64);
    let total_steps = steps_per_epoch * small.epochs;
    let base = |name: &str| config(out, &format!("helps/{name}"), &small, BASE_OPTIMIZER, 64, 0);
    let mut commands = Vec::new();
    let mut arm = |technique: &'static str, change: String, c: TrainConfig| -> Result<Arm> {
        commands.push(command(&c));
        Ok(Arm {
            technique,
            change,
            runs: run_seeds(&c, seeds)?,
        })
    };

    let baseline = arm(
        "baseline",
        format!("<code>{BASE_OPTIMIZER}</code>, batch 64, shuffled, no dropout, noise, warm-up, normalization or weight decay"),
        base("baseline"),
    )?;
    let mut arms = Vec::new();
    let mut c = base("fixed_order");
    c.data_order = DataOrder::Fixed;
    arms.push(arm(
        "shuffling",
        "off: the same order every epoch (the baseline reshuffles)".into(),
        c,
    )?);
    let mut c = base("dropout");
    c.model.dropout = 0.2;
    arms.push(arm(
        "dropout",
        "dropout 0.2 after each hidden layer".into(),
        c,
    )?);
    let mut c = base("grad_noise");
    // η = 1e-5: over the MLP's 235,146 weights the noise's norm starts near 1.5, the size
    // of the gradient's.
    c.grad_noise = Some(1e-5);
    arms.push(arm("gradient noise", "Gaussian noise of variance 1e-5/(1+t)^0.55 per weight added to the gradient (Neelakantan et al. 2015)".into(), c)?);
    let mut c = base("warmup");
    let warm = (total_steps / 10).max(2);
    c.schedule = Some(format!(
        "linear(start_factor=0.01, end_factor=1, total_iters={warm})"
    ));
    arms.push(arm(
        "warm-up",
        format!("linear warm-up over the first {warm} steps"),
        c,
    )?);
    let difficulty = difficulty_scores(out, budget)?;
    let mut c = base("curriculum");
    c.curriculum = Some(Curriculum {
        difficulty,
        start: 0.2,
        ramp: small.epochs as f64 / 2.0,
    });
    arms.push(arm("curriculum learning", format!("easy → hard: batches from the easiest 20% first, all examples after {} epoch(s); difficulty = a logistic regression's loss on the example", small.epochs as f64 / 2.0), c)?);
    let mut c = base("batch_norm");
    c.model.batch_norm = true;
    arms.push(arm(
        "normalization",
        "batch normalization after each hidden layer".into(),
        c,
    )?);
    let mut c = base("weight_decay");
    c.optimizer = "sgd(lr=0.05, momentum=0.9, weight_decay=0.0005)".into();
    arms.push(arm(
        "weight decay",
        "L2 regularization, weight_decay 5e-4".into(),
        c,
    )?);

    // Fine-tuning: its own pair of arms on digits 5-9 (pre-trained on 0-4 vs from scratch).
    let mut pre = base("pretrain_0_4");
    pre.classes = Some(vec![0, 1, 2, 3, 4]);
    let pre_dir = run(&pre)?.dir;
    let mut scratch_c = base("scratch_5_9");
    scratch_c.classes = Some(vec![5, 6, 7, 8, 9]);
    let scratch = arm(
        "from scratch (digits 5–9)",
        "a fresh network on digits 5–9".into(),
        scratch_c.clone(),
    )?;
    let mut fine_c = base("finetune_5_9");
    fine_c.classes = Some(vec![5, 6, 7, 8, 9]);
    fine_c.init = Some(pre_dir);
    // A new output layer: the classes are new.
    fine_c.init_exclude = vec![format!("fc{}.", fine_c.model.widths.len() + 1)];
    let fine = arm("fine-tuning", "digits 5–9 from the hidden layers of a network trained on digits 0–4, with a fresh output layer (same steps as from scratch)".into(), fine_c)?;
    commands.push(command(&pre));

    // Steps to a target: the loss the baseline reaches halfway through (mean of its seeds).
    let half = |runs: &[Run]| -> f64 {
        let at: Vec<f64> = runs
            .iter()
            .filter_map(|r| {
                let points: Vec<(f64, f64)> = r.steps.iter().map(|s| (s.0, s.1)).collect();
                windowed(&points, 10)
                    .into_iter()
                    .find(|p| p.0 >= r.steps.len() as f64 / 2.0)
                    .map(|p| p.1)
            })
            .collect();
        SeedStats::of(&at).mean
    };
    let target = half(&baseline.runs);
    let ft_target = half(&scratch.runs);

    let mut csv = Table::new(&[
        "technique",
        "seed",
        "train_loss",
        "test_accuracy",
        "steps_to_target",
        "target",
    ]);
    let mut rows = Vec::new();
    let mut claims = Vec::new();
    let mut findings = Vec::new();
    let base_fig = baseline.figures(target);
    let scratch_fig = scratch.figures(ft_target);
    let mut loss_series = vec![curve("baseline", &baseline.runs)];
    push_rows(&mut csv, &baseline, &base_fig, target);
    rows.push(row(&baseline, &base_fig, None));
    for a in &arms {
        let f = a.figures(target);
        push_rows(&mut csv, a, &f, target);
        rows.push(row(a, &f, Some(&base_fig)));
        loss_series.push(curve(a.technique, &a.runs));
        findings.push((a.technique, f));
    }
    push_rows(&mut csv, &scratch, &scratch_fig, ft_target);
    rows.push(row(&scratch, &scratch_fig, None));
    let fine_fig = fine.figures(ft_target);
    push_rows(&mut csv, &fine, &fine_fig, ft_target);
    rows.push(row(&fine, &fine_fig, Some(&scratch_fig)));
    csv.save(&out.join("data/helps.csv"))?;

    let loss_svg = out.join("data/helps_loss.svg");
    chart(
        &loss_svg,
        "training loss with each technique (mean over seeds, 10-step means)",
        "step",
        "log10 training loss",
        loss_series,
        Vec::new(),
        false,
    )?;
    let ft_svg = out.join("data/helps_finetune.svg");
    chart(
        &ft_svg,
        "digits 5–9: fine-tuned from digits 0–4 vs from scratch",
        "step",
        "log10 training loss",
        vec![
            curve("from scratch", &scratch.runs),
            curve("fine-tuned", &fine.runs),
        ],
        Vec::new(),
        false,
    )?;

    // Claims: better = lower final training loss (the lecture's "helps optimization"), or
    // for dropout and weight decay (regularizers) higher test accuracy.
    let mut verdict_of = |name: &'static str,
                          claim: &str,
                          f: &Figures,
                          base: &Figures,
                          by_accuracy: bool| {
        let (a, b, what) = if by_accuracy {
            (&f.accuracy, &base.accuracy, "test accuracy")
        } else {
            (&f.loss, &base.loss, "final train loss")
        };
        let better = if by_accuracy {
            a.mean > b.mean
        } else {
            a.mean < b.mean
        };
        let beyond = a.beyond_noise(b);
        let show = |s: &SeedStats| {
            if by_accuracy {
                format!("{} ± {:.2}", pct(s.mean), 100.0 * s.sd)
            } else {
                format!("{:.4} ± {:.4}", s.mean, s.sd)
            }
        };
        claims.push(Claim::new(
            claim,
            format!(
                "{what} {} with {name} vs {} without, {} seeds; the difference is {} twice its standard error",
                show(a),
                show(b),
                a.n,
                if beyond { "beyond" } else { "within" }
            ),
            Verdict::from(better && beyond, !better && beyond),
        ));
    };
    let get = |name: &str| {
        findings
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, f)| f)
            .context("arm")
    };
    let shuffled_fig = get("shuffling")?;
    // Shuffling's arm is the fixed order: the claim compares the baseline (shuffled) to it.
    verdict_of(
        "shuffling",
        "Shuffling the data each epoch helps optimization",
        &base_fig,
        shuffled_fig,
        false,
    );
    verdict_of(
        "batch normalization",
        "Normalization (batch norm) helps optimization",
        get("normalization")?,
        &base_fig,
        false,
    );
    verdict_of(
        "a curriculum",
        "Curriculum learning (easy → hard) helps optimization",
        get("curriculum learning")?,
        &base_fig,
        false,
    );
    verdict_of(
        "warm-up",
        "Warm-up helps SGD with momentum",
        get("warm-up")?,
        &base_fig,
        false,
    );
    verdict_of(
        "dropout",
        "Dropout improves test accuracy",
        get("dropout")?,
        &base_fig,
        true,
    );
    verdict_of(
        "fine-tuning",
        "Fine-tuning from a related task trains faster than from scratch",
        &fine_fig,
        &scratch_fig,
        false,
    );

    let helped: Vec<String> = findings
        .iter()
        .filter(|(_, f)| f.loss.mean < base_fig.loss.mean && f.loss.beyond_noise(&base_fig.loss))
        .map(|(t, _)| (*t).to_string())
        .collect();
    let mut summary = vec![format!(
        "Each technique was switched on alone against the same baseline (<code>{BASE_OPTIMIZER}</code>, {} epoch(s), {seeds} seeds each); an effect counts when the means differ by more than twice the standard error of their difference. The target for \"steps to target\" is the loss the baseline reaches halfway, {target:.3}.",
        small.epochs
    )];
    summary.push(if helped.is_empty() {
        "No technique lowered the final training loss beyond the seed noise at this budget.".into()
    } else {
        format!(
            "Lower final training loss beyond the seed noise: {}.",
            esc(&helped.join(", "))
        )
    });
    summary.push(format!(
        "Fine-tuning: on digits 5–9, from weights trained on 0–4, final train loss {:.4} ± {:.4} vs {:.4} ± {:.4} from scratch at the same {} steps; test accuracy {} vs {}.",
        fine_fig.loss.mean,
        fine_fig.loss.sd,
        scratch_fig.loss.mean,
        scratch_fig.loss.sd,
        fine.runs[0].steps.len(),
        pct(fine_fig.accuracy.mean),
        pct(scratch_fig.accuracy.mean)
    ));
    Ok(Section {
        id: "helps",
        title: "What helps optimization".into(),
        summary,
        table: Some(table(
            &["technique", "what changed", "final train loss", "test accuracy", "steps to target", "effect beyond seed noise"],
            &rows,
        )),
        figures: vec![
            Figure {
                svg: loss_svg,
                caption: "Training loss of the baseline and of each technique on its own (mean over seeds).".into(),
                data: vec!["data/helps.csv".into()],
            },
            Figure {
                svg: ft_svg,
                caption: "Fine-tuning: the same network on digits 5–9, started from weights trained on digits 0–4 or from a fresh initialization.".into(),
                data: vec!["data/helps.csv".into()],
            },
        ],
        commands,
        claims,
    })
}

fn curve(label: &str, runs: &[Run]) -> Path2 {
    Path2 {
        label: label.to_string(),
        points: loss_curves(runs, 10).0,
    }
}

fn push_rows(csv: &mut Table, arm: &Arm, f: &Figures, target: f64) {
    for (seed, r) in arm.runs.iter().enumerate() {
        csv.row([
            arm.technique,
            seed.to_string().as_str(),
            num(r.train_loss()).as_str(),
            num(r.test_accuracy()).as_str(),
            f.steps[seed].map_or("nan".into(), num).as_str(),
            num(target).as_str(),
        ]);
    }
}

fn row(arm: &Arm, f: &Figures, base: Option<&Figures>) -> Vec<String> {
    let reached: Vec<f64> = f.steps.iter().flatten().copied().collect();
    let steps = if arm.runs[0].summary.config.curriculum.is_some() {
        // Its early batches are the easy examples: their loss is no measure of progress.
        "not comparable (easy batches first)".to_string()
    } else if reached.is_empty() {
        "not reached".to_string()
    } else {
        let s = SeedStats::of(&reached);
        format!(
            "{:.0} ± {:.0}{}",
            s.mean,
            s.sd,
            if reached.len() < f.steps.len() {
                format!(" ({} of {} seeds)", reached.len(), f.steps.len())
            } else {
                String::new()
            }
        )
    };
    let effect = match base {
        None => "(reference)".to_string(),
        Some(b) => {
            let d_loss = f.loss.mean - b.loss.mean;
            let d_acc = f.accuracy.mean - b.accuracy.mean;
            format!(
                "loss {d_loss:+.4} ({}), accuracy {:+.2} points ({})",
                if f.loss.beyond_noise(&b.loss) {
                    "yes"
                } else {
                    "no"
                },
                100.0 * d_acc,
                if f.accuracy.beyond_noise(&b.accuracy) {
                    "yes"
                } else {
                    "no"
                }
            )
        }
    };
    vec![
        esc(arm.technique),
        arm.change.clone(),
        format!("{:.4} ± {:.4}", f.loss.mean, f.loss.sd),
        format!("{} ± {:.2}", pct(f.accuracy.mean), 100.0 * f.accuracy.sd),
        steps,
        effect,
    ]
}

/// Difficulty of each training example for the curriculum: the per-example loss of a
/// logistic regression trained for one epoch (a small model's view of what is hard), written
/// one per line to `data/helps_difficulty.txt`.
fn difficulty_scores(out: &Path, budget: &Budget) -> Result<std::path::PathBuf> {
    let mut c = TrainConfig::new(
        ModelSpec::new(ModelKind::LogReg),
        "sgd(lr=0.05, momentum=0.9)",
        &out.join("runs/helps/difficulty_logreg"),
    );
    c.epochs = 1;
    c.overwrite = true;
    c.data_dir = budget.data_dir.clone();
    let r = run(&c)?;
    let (model, _) = load_model(&r.dir)?;
    let data = train::load_data(&c)?;
    let set = &data.split.train;
    let mut text = String::with_capacity(set.len() * 10);
    let mut rng = gradlab::landscape::Rng::new(0);
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(1000) {
        let (x, y) = batch(set, chunk)?;
        let logits = model.forward(&x, false, &mut rng)?;
        let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = log_p.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
        for v in picked.to_vec1::<f32>()? {
            text.push_str(&format!("{}\n", -v));
        }
    }
    let path = out.join("data/helps_difficulty.txt");
    gradlab::io::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}
