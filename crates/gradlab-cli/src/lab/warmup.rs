//! Study: does Adam need warm-up? Adam at several learning rates with and without a linear
//! warm-up, RAdam (no warm-up) and SWATS: the loss spikes of the first steps, and the size
//! of Adam's adaptive step η/σ = η/(√v̂ + ε) while v̂ rests on few gradients — the lecture's
//! (and Liu et al. 2020's) explanation of why warm-up helps.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::Path2;
use anyhow::{Context, Result};
use gradlab_candle::models::{cross_entropy, Model, ModelKind, ModelSpec};
use gradlab_candle::optim::{GradlabOptimizer, OptimizerConfig};
use gradlab_candle::train::{self, batch, TrainConfig};
use std::path::Path;

/// The early steps in which spikes are looked for and η/σ is followed.
const EARLY_STEPS: usize = 60;

/// One configuration's early behaviour and final figures.
struct Outcome {
    label: String,
    /// The highest loss among the first steps, over the first step's loss.
    early_peak: f64,
    /// Steps among the first whose loss is above the first step's.
    steps_above_start: usize,
    train_loss: f64,
    test_accuracy: f64,
}

/// The warm-up schedule used beside plain Adam: linear from 1% of the rate to all of it over
/// the first `steps` steps.
fn warmup_schedule(steps: usize) -> String {
    format!("linear(start_factor=0.01, end_factor=1, total_iters={steps})")
}

/// Learning rates of the study (the highest is where the lecture expects trouble).
fn rates(quick: bool) -> Vec<f64> {
    if quick {
        vec![0.001, 0.03]
    } else {
        vec![0.001, 0.01, 0.03]
    }
}

/// Study: Adam with and without warm-up, RAdam, SWATS.
pub fn warmup(out: &Path, budget: &Budget) -> Result<Section> {
    let quick = budget.is_small();
    let epochs = budget.epochs.min(2);
    let small = Budget {
        epochs,
        ..budget.clone()
    };
    let warm_steps = (EARLY_STEPS / 2).max(5);
    let mut outcomes = Vec::new();
    let mut commands = Vec::new();
    let mut early_series = Vec::new();
    let mut curves_csv = Table::new(&["configuration", "step", "loss"]);
    for lr in rates(quick) {
        let lr_text = gradlab::spec::format_number(lr);
        let configs: Vec<(String, String, Option<String>)> = vec![
            (
                format!("adam lr={lr_text}"),
                format!("adam(lr={lr_text})"),
                None,
            ),
            (
                format!("adam lr={lr_text} + warm-up"),
                format!("adam(lr={lr_text})"),
                Some(warmup_schedule(warm_steps)),
            ),
            (
                format!("radam lr={lr_text}"),
                format!("radam(lr={lr_text})"),
                None,
            ),
            (
                format!("swats lr={lr_text}"),
                format!("swats(lr={lr_text})"),
                None,
            ),
        ];
        for (label, spec, schedule) in configs {
            let mut c = config(
                out,
                &format!("warmup/{}", slug(&label)),
                &small,
                &spec,
                64,
                0,
            );
            c.schedule = schedule;
            commands.push(command(&c));
            let r = run(&c)?;
            let first = r.steps.first().map_or(f64::NAN, |s| s.1);
            let early: Vec<f64> = r.steps.iter().take(EARLY_STEPS).map(|s| s.1).collect();
            let peak = early.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for s in r.steps.iter().take(EARLY_STEPS * 2) {
                curves_csv.row([label.as_str(), num(s.0).as_str(), num(s.1).as_str()]);
            }
            if lr == *rates(quick).last().expect("rates") {
                early_series.push(Path2 {
                    label: label.clone(),
                    points: r
                        .steps
                        .iter()
                        .take(EARLY_STEPS * 2)
                        .map(|s| (s.0, s.1.max(1e-12).log10()))
                        .collect(),
                });
            }
            outcomes.push(Outcome {
                label,
                early_peak: peak / first,
                steps_above_start: early.iter().filter(|&&l| l > first).count(),
                train_loss: r.train_loss(),
                test_accuracy: r.test_accuracy(),
            });
        }
    }
    curves_csv.save(&out.join("data/warmup_loss.csv"))?;
    let loss_svg = out.join("data/warmup_early_loss.svg");
    let top_lr = *rates(quick).last().expect("rates");
    chart(
        &loss_svg,
        &format!(
            "the first {} steps at lr = {}",
            EARLY_STEPS * 2,
            gradlab::spec::format_number(top_lr)
        ),
        "step",
        "log10 training loss",
        early_series,
        Vec::new(),
        false,
    )?;

    // η/σ: Adam's adaptive step per coordinate in the first steps, with and without warm-up.
    let ratio_steps = EARLY_STEPS.min(budget.train_limit.unwrap_or(8000).div_ceil(64).max(2));
    let mut ratio_csv = Table::new(&[
        "configuration",
        "step",
        "lr",
        "median",
        "p99",
        "max",
        "median_sigma_change",
    ]);
    let mut ratio_series = Vec::new();
    let mut ratios = Vec::new();
    for (label, schedule) in [
        (
            format!("adam lr={}", gradlab::spec::format_number(top_lr)),
            None,
        ),
        (
            format!("adam lr={} + warm-up", gradlab::spec::format_number(top_lr)),
            Some(warmup_schedule(warm_steps)),
        ),
    ] {
        let trace = adaptive_steps(out, budget, top_lr, schedule.as_deref(), ratio_steps)?;
        for (t, s) in trace.iter().enumerate() {
            ratio_csv.row([
                label.as_str(),
                (t + 1).to_string().as_str(),
                num(s.lr).as_str(),
                num(s.median).as_str(),
                num(s.p99).as_str(),
                num(s.max).as_str(),
                num(s.sigma_change).as_str(),
            ]);
        }
        ratio_series.push(Path2 {
            label: format!("{label}: 99th percentile"),
            points: trace
                .iter()
                .enumerate()
                .map(|(t, s)| ((t + 1) as f64, s.p99.max(1e-30).log10()))
                .collect(),
        });
        ratio_series.push(Path2 {
            label: format!("{label}: median"),
            points: trace
                .iter()
                .enumerate()
                .map(|(t, s)| ((t + 1) as f64, s.median.max(1e-30).log10()))
                .collect(),
        });
        ratios.push((label, trace));
    }
    ratio_csv.save(&out.join("data/warmup_adaptive_step.csv"))?;
    let ratio_svg = out.join("data/warmup_adaptive_step.svg");
    chart(
        &ratio_svg,
        "Adam's adaptive step η/(√v̂ + ε) over the coordinates",
        "step",
        "log10 η/(√v̂ + ε)",
        ratio_series,
        Vec::new(),
        false,
    )?;

    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                esc(&o.label),
                format!("{:.2}×", o.early_peak),
                o.steps_above_start.to_string(),
                format!("{:.4}", o.train_loss),
                pct(o.test_accuracy),
            ]
        })
        .collect();
    let find = |label: &str| outcomes.iter().find(|o| o.label == label);
    let top = gradlab::spec::format_number(top_lr);
    let plain = find(&format!("adam lr={top}")).context("adam at the top rate")?;
    let warmed = find(&format!("adam lr={top} + warm-up")).context("adam with warm-up")?;
    let radam = find(&format!("radam lr={top}")).context("radam")?;
    let swats = find(&format!("swats lr={top}")).context("swats")?;
    let (no_warm, with_warm) = (&ratios[0].1, &ratios[1].1);
    let first_p99 = no_warm.first().map_or(f64::NAN, |s| s.p99);
    let warm_first = with_warm.first().map_or(f64::NAN, |s| s.p99);
    // σ's step-to-step change at step 2 (the first with a step before) and at the last step.
    let early_change = no_warm.get(1).map_or(f64::NAN, |s| s.sigma_change);
    let late_change = no_warm.last().map_or(f64::NAN, |s| s.sigma_change);
    let needs_warmup =
        plain.early_peak > 1.1 * warmed.early_peak && plain.train_loss >= warmed.train_loss;
    let no_need =
        plain.early_peak <= warmed.early_peak * 1.02 && plain.train_loss <= 1.1 * warmed.train_loss;
    let radam_like_warmup =
        radam.early_peak <= 1.1 * warmed.early_peak.max(1.0) && radam.early_peak < plain.early_peak;
    let summary = vec![
        format!(
            "At lr = {top}, Adam without warm-up reached {:.2}× its first loss within the first {EARLY_STEPS} steps ({} of them above it); with a linear warm-up over {warm_steps} steps {:.2}× ({}); RAdam, without warm-up, {:.2}× ({}); SWATS {:.2}× ({}).",
            plain.early_peak, plain.steps_above_start, warmed.early_peak, warmed.steps_above_start, radam.early_peak, radam.steps_above_start, swats.early_peak, swats.steps_above_start
        ),
        format!(
            "Final training loss after {epochs} epoch(s): {:.4} without warm-up, {:.4} with, {:.4} RAdam, {:.4} SWATS.",
            plain.train_loss, warmed.train_loss, radam.train_loss, swats.train_loss
        ),
        format!(
            "Why: at the first step v̂ is one squared gradient, so η/(√v̂ + ε) is η/|g|: the 99th percentile over the coordinates was {first_p99:.3e} at step 1 without warm-up, {warm_first:.3e} with it (the warm-up scales η down while v̂ still rests on few gradients). And σ = √v̂ + ε is erratic while it rests on few gradients: a coordinate's σ changed by a median factor of {early_change:.3} from step 1 to step 2, and {late_change:.4} at step {} — the variance of the adaptive rate that RAdam's rectification removes.",
            no_warm.len()
        ),
    ];
    let claims = vec![
        Claim::new(
            "Adam needs warm-up at a high learning rate",
            format!(
                "lr {top}: early loss peak {:.2}× the first loss without warm-up vs {:.2}× with; final train loss {:.4} vs {:.4} (holds when the peak is over 10% higher and the final loss not lower without warm-up)",
                plain.early_peak, warmed.early_peak, plain.train_loss, warmed.train_loss
            ),
            Verdict::from(needs_warmup, no_need),
        ),
        Claim::new(
            "RAdam behaves like Adam with warm-up, without a warm-up schedule",
            format!(
                "lr {top}: early loss peak {:.2}× (RAdam) vs {:.2}× (Adam + warm-up) and {:.2}× (Adam)",
                radam.early_peak, warmed.early_peak, plain.early_peak
            ),
            Verdict::from(radam_like_warmup, radam.early_peak >= plain.early_peak),
        ),
        Claim::new(
            "Adam's adaptive step η/σ is unreliable in the first steps (σ rests on few gradients)",
            format!(
                "median step-to-step change of a coordinate's σ = √v̂ + ε: ×{early_change:.3} at step 2, ×{late_change:.4} at step {} (holds when the early change, as a log, is over 5 times the later one)",
                no_warm.len()
            ),
            Verdict::from(
                early_change.ln() > 5.0 * late_change.ln(),
                early_change.ln() <= late_change.ln(),
            ),
        ),
    ];
    Ok(Section {
        id: "warmup",
        title: "Does Adam need warm-up? RAdam and SWATS".into(),
        summary,
        table: Some(table(
            &[
                "configuration",
                &format!("early loss peak (first {EARLY_STEPS} steps)"),
                "early steps above the first loss",
                "final train loss",
                "test accuracy",
            ],
            &rows,
        )),
        figures: vec![
            Figure {
                svg: loss_svg,
                caption: format!("Training loss of the first steps at lr = {top}, batch 64, the same seed and data order for every configuration."),
                data: vec!["data/warmup_loss.csv".into()],
            },
            Figure {
                svg: ratio_svg,
                caption: "Adam's per-coordinate step size η/(√v̂ + ε) in the first steps (median and 99th percentile over the parameters that had a gradient), from its second-moment state after each step.".into(),
                data: vec!["data/warmup_adaptive_step.csv".into()],
            },
        ],
        commands,
        claims,
    })
}

/// Adam's adaptive step η_t/(√v̂_t + ε) over the coordinates after each of the first steps.
struct AdaptiveStep {
    lr: f64,
    median: f64,
    p99: f64,
    max: f64,
    /// The median factor by which a coordinate's σ = √v̂ + ε changed from the step before.
    sigma_change: f64,
}

/// Trains the lab's MLP with `adam(lr)` (and `schedule`) for `steps` steps, reading the
/// optimizer's second moment after each step.
fn adaptive_steps(
    out: &Path,
    budget: &Budget,
    lr: f64,
    schedule: Option<&str>,
    steps: usize,
) -> Result<Vec<AdaptiveStep>> {
    let spec = format!("adam(lr={})", gradlab::spec::format_number(lr));
    let mut c = TrainConfig::new(ModelSpec::new(ModelKind::Mlp), &spec, &out.join("unused"));
    c.train_limit = budget.train_limit;
    c.data_dir = budget.data_dir.clone();
    let split = train::load_data(&c)?.split;
    let model = Model::new(&c.model, split.train.rows, split.train.cols, c.seed)?;
    let mut opt =
        GradlabOptimizer::with_names(model.params().to_vec(), &OptimizerConfig::new(spec.clone()))?;
    let mut scheduler = schedule
        .map(|s| opt.with_engine(|e| e.scheduler(s)))
        .transpose()?;
    let (beta2, eps) = (0.999f64, 1e-8f64);
    // The data set's own order (the digits come in no particular order).
    let order: Vec<usize> = (0..split.train.len()).collect();
    let mut rng = gradlab::landscape::Rng::new(0);
    let mut trace = Vec::with_capacity(steps);
    let mut previous: Vec<f64> = Vec::new();
    for (t, idx) in order.chunks(64).take(steps).enumerate() {
        let (x, y) = batch(&split.train, idx)?;
        let loss = cross_entropy(&model.forward(&x, true, &mut rng)?, &y)?;
        let lr_t = opt.lr();
        opt.backward_step(&loss)?;
        let engine = opt.engine_f32().context("adam runs in f32")?;
        let state = engine.state_dict();
        let correction = 1.0 - beta2.powi(t as i32 + 1);
        // σ = √v̂ + ε per coordinate; NaN where no gradient has arrived yet (dead units take
        // no step).
        let sigma: Vec<f64> = state
            .tensors
            .iter()
            .filter(|(key, _)| key.ends_with("/exp_avg_sq"))
            .flat_map(|(_, (_, v))| v.iter())
            .map(|&v| {
                if v > 0.0 {
                    (v as f64 / correction).sqrt() + eps
                } else {
                    f64::NAN
                }
            })
            .collect();
        let mut sizes: Vec<f64> = sigma
            .iter()
            .filter(|s| s.is_finite())
            .map(|s| lr_t / s)
            .collect();
        sizes.sort_by(f64::total_cmp);
        let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
        let mut changes: Vec<f64> = sigma
            .iter()
            .zip(&previous)
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| (a.ln() - b.ln()).abs())
            .collect();
        let sigma_change = if changes.is_empty() {
            f64::NAN
        } else {
            let mid = changes.len() / 2;
            changes.select_nth_unstable_by(mid, f64::total_cmp);
            changes[mid].exp()
        };
        previous = sigma;
        trace.push(AdaptiveStep {
            lr: lr_t,
            median: at(0.5),
            p99: at(0.99),
            max: at(1.0),
            sigma_change,
        });
        if let Some(s) = scheduler.as_mut() {
            opt.with_engine(|e| e.step_schedule(s, None))?;
        }
    }
    Ok(trace)
}
