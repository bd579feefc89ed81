//! The lab's studies. Each runs its experiments, writes figures (SVG) and data (CSV/JSON)
//! under the output folder, and returns a report section whose text is built only from
//! what was measured.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::{self, Band, LineChart, Marker, Path2};
use anyhow::{Context, Result};
use gradlab::landscape::lanczos::{lanczos, LanczosOptions};
use gradlab::landscape::sharpness::epsilon_sharpness;
use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::{replay, Surface};
use gradlab_candle::analysis::{hessian_report, HessianOptions};
use gradlab_candle::checkpoint::load_model;
use gradlab_candle::hessian::{second_order, NetworkHessian, NetworkObjective};
use gradlab_candle::landscape::{landscape, LandscapeOptions};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{self, batch, TrainConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The optimizers of the lecture, with learning rates that suit this MLP.
pub fn lab_optimizers() -> Vec<String> {
    [
        "sgd(lr=0.05)",
        "sgd(lr=0.05, momentum=0.9)",
        "sgd(lr=0.05, momentum=0.9, nesterov=true)",
        "adagrad(lr=0.01)",
        "rmsprop(lr=0.001)",
        "adam(lr=0.001)",
        "adamw(lr=0.001, weight_decay=0.01)",
        "adam(lr=0.001, amsgrad=true)",
        "nadam(lr=0.002)",
        "radam(lr=0.001)",
        "adabound(lr=0.001, final_lr=0.1)",
        "swats(lr=0.001)",
        "lookahead(adam(lr=0.001), k=5, alpha=0.5)",
        "lamb(lr=0.01)",
        "lars(lr=1.0, momentum=0.9, trust_coefficient=0.01)",
        "lion(lr=0.0001)",
        "adopt(lr=0.001)",
        "ademamix(lr=0.001)",
        "adamw_schedulefree(lr=0.0025)",
        "adafactor(lr=0.01)",
        "prodigy(lr=1)",
        "sam(sgd(lr=0.05, momentum=0.9), rho=0.05)",
        "muon(lr=0.02, fallback=adamw(lr=0.001))",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One finished training run.
struct Run {
    summary: Value,
    /// (step, loss, grad_norm, lr, seconds).
    steps: Vec<(f64, f64, f64, f64, f64)>,
    /// Epoch lines.
    epochs: Vec<Value>,
    dir: PathBuf,
}

impl Run {
    fn ms_per_step(&self) -> f64 {
        let mut d: Vec<f64> = self.steps.windows(2).map(|w| w[1].4 - w[0].4).collect();
        if d.is_empty() {
            return f64::NAN;
        }
        d.sort_by(f64::total_cmp);
        1e3 * d[d.len() / 2]
    }
    fn test_accuracy(&self) -> f64 {
        self.summary["test_accuracy"].as_f64().unwrap_or(f64::NAN)
    }
    fn train_loss(&self) -> f64 {
        self.summary["train_loss"].as_f64().unwrap_or(f64::NAN)
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

fn config(
    out: &Path,
    name: &str,
    budget: &Budget,
    optimizer: &str,
    batch_size: usize,
    seed: u64,
) -> TrainConfig {
    let mut c = TrainConfig::new(
        ModelSpec::new(ModelKind::Mlp),
        optimizer,
        &out.join("runs").join(name),
    );
    c.epochs = budget.epochs;
    c.train_limit = budget.train_limit;
    // The report's folder is the lab's own: a new report replaces the old one's runs.
    c.overwrite = true;
    c.batch_size = batch_size;
    c.seed = seed;
    c
}

/// One training run; after Ctrl-C, none starts (the run in progress has finished and
/// written its files).
fn run(config: &TrainConfig) -> Result<Run> {
    crate::interrupt::check()?;
    let summary = train::train(config, None, |_| {})
        .with_context(|| format!("training with {}", config.optimizer))?;
    let text = std::fs::read_to_string(config.out.join("metrics.jsonl"))?;
    let (mut steps, mut epochs) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: Value = serde_json::from_str(line)?;
        match v["kind"].as_str() {
            Some("step") => steps.push((
                v["step"].as_f64().unwrap_or(0.0),
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["grad_norm"].as_f64().unwrap_or(f64::NAN),
                v["lr"].as_f64().unwrap_or(f64::NAN),
                v["seconds"].as_f64().unwrap_or(f64::NAN),
            )),
            Some("epoch") => epochs.push(v),
            _ => {}
        }
    }
    Ok(Run {
        summary: summary.json,
        steps,
        epochs,
        dir: config.out.clone(),
    })
}

fn command(config: &TrainConfig) -> String {
    let mut c = format!(
        "gradlab train --model mlp --optimizer '{}' --epochs {} --batch-size {} --seed {}",
        config.optimizer, config.epochs, config.batch_size, config.seed
    );
    if let Some(s) = &config.schedule {
        c.push_str(&format!(" --schedule '{s}'"));
    }
    if let Some(n) = config.train_limit {
        c.push_str(&format!(" --train-limit {n}"));
    }
    c.push_str(&format!(" --out {}", config.out.display()));
    c
}

/// Runs `config` once per seed (seed 0, 1, ...), each in its own folder.
fn run_seeds(config: &TrainConfig, seeds: usize) -> Result<Vec<Run>> {
    (0..seeds.max(1) as u64)
        .map(|seed| {
            let mut c = config.clone();
            c.seed = seed;
            c.out = config.out.with_file_name(format!(
                "{}_{seed}",
                config
                    .out
                    .file_name()
                    .map_or("run".into(), |n| n.to_string_lossy().into_owned())
            ));
            run(&c)
        })
        .collect()
}

/// The runs' log10 training loss, averaged over windows of `w` steps: mean and spread.
fn loss_curves(runs: &[Run], w: usize) -> (Vec<(f64, f64)>, Band) {
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            windowed(
                &r.steps
                    .iter()
                    .map(|s| (s.0, s.1.max(1e-12).log10()))
                    .collect::<Vec<_>>(),
                w,
            )
        })
        .collect();
    mean_band(&curves)
}

fn mean_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

/// Mean over windows of `w` steps, as (step, mean) points.
fn windowed(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    points
        .chunks(w.max(1))
        .map(|c| {
            (
                c[c.len() - 1].0,
                c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64,
            )
        })
        .collect()
}

/// Mean curve and (x, min, max) band over several runs' curves (same x).
fn mean_band(curves: &[Vec<(f64, f64)>]) -> (Vec<(f64, f64)>, Band) {
    let n = curves.iter().map(Vec::len).min().unwrap_or(0);
    let mut mean = Vec::with_capacity(n);
    let mut band = Vec::with_capacity(n);
    for i in 0..n {
        let ys: Vec<f64> = curves.iter().map(|c| c[i].1).collect();
        let m = ys.iter().sum::<f64>() / ys.len() as f64;
        let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        mean.push((curves[0][i].0, m));
        band.push((curves[0][i].0, lo, hi));
    }
    (mean, band)
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn chart(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    series: Vec<Path2>,
    bands: Vec<(usize, Band)>,
    log_x: bool,
) -> Result<()> {
    plot::line_chart(
        path,
        &LineChart {
            title,
            x_label: x,
            y_label: y,
            series,
            log_x,
            secondary: None,
            markers: Vec::new(),
            cap_blowup: false,
            bands,
        },
    )
}

/// Study 1: optimizers on the same network and budget.
pub fn optimizers(
    out: &Path,
    budget: &Budget,
    specs: &[String],
    schedule: Option<&str>,
) -> Result<Section> {
    let mut rows = Vec::new();
    let mut loss_series = Vec::new();
    let mut acc_series = Vec::new();
    let (mut loss_bands, mut acc_bands) = (Vec::new(), Vec::new());
    let mut commands = Vec::new();
    let mut results: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut csv = Table::new(&[
        "optimizer",
        "seed",
        "epoch",
        "train_loss",
        "test_loss",
        "test_accuracy",
    ]);
    let mut loss_csv = Table::new(&["optimizer", "step", "mean_loss"]);
    let mut switch_notes = Vec::new();
    let mut switch_markers = Vec::new();
    // Each optimizer's first run, for the curvature of SAM's minimum against its base's.
    let mut first_runs: Vec<(String, PathBuf)> = Vec::new();
    for (i, spec_text) in specs.iter().enumerate() {
        spec::parse(spec_text)
            .with_context(|| format!("--optimizer {}", gradlab::error::quote(spec_text)))?;
        let mut runs = Vec::new();
        for seed in 0..budget.seeds as u64 {
            let mut c = config(
                out,
                &format!("optimizers/{}_{seed}", slug(spec_text)),
                budget,
                spec_text,
                64,
                seed,
            );
            c.schedule = schedule.map(str::to_string);
            if seed == 0 {
                commands.push(command(&c));
            }
            runs.push(run(&c)?);
        }
        let losses: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| {
                windowed(
                    &r.steps
                        .iter()
                        .map(|s| (s.0, s.1.max(1e-12).log10()))
                        .collect::<Vec<_>>(),
                    10,
                )
            })
            .collect();
        let accs: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| {
                r.epochs
                    .iter()
                    .map(|e| {
                        (
                            e["epoch"].as_f64().unwrap_or(0.0) + 1.0,
                            e["test_accuracy"].as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect()
            })
            .collect();
        let (loss_mean, loss_band) = mean_band(&losses);
        let (acc_mean, acc_band) = mean_band(&accs);
        for (x, y) in &loss_mean {
            loss_csv.row([
                spec_text.as_str(),
                num(*x).as_str(),
                num(10f64.powf(*y)).as_str(),
            ]);
        }
        for (seed, r) in runs.iter().enumerate() {
            for e in &r.epochs {
                csv.row([
                    spec_text.as_str(),
                    seed.to_string().as_str(),
                    e["epoch"].to_string().as_str(),
                    num(e["train_loss"].as_f64().unwrap_or(f64::NAN)).as_str(),
                    num(e["test_loss"].as_f64().unwrap_or(f64::NAN)).as_str(),
                    num(e["test_accuracy"].as_f64().unwrap_or(f64::NAN)).as_str(),
                ]);
            }
        }
        if budget.seeds > 1 {
            loss_bands.push((i, loss_band));
            acc_bands.push((i, acc_band));
        }
        loss_series.push(Path2 {
            label: spec_text.clone(),
            points: loss_mean,
        });
        acc_series.push(Path2 {
            label: spec_text.clone(),
            points: acc_mean,
        });
        first_runs.push((spec_text.clone(), runs[0].dir.clone()));
        let acc: Vec<f64> = runs.iter().map(Run::test_accuracy).collect();
        let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
        let spread = acc.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - acc.iter().copied().fold(f64::INFINITY, f64::min);
        let ms = runs.iter().map(Run::ms_per_step).sum::<f64>() / runs.len() as f64;
        let train_loss = runs.iter().map(Run::train_loss).sum::<f64>() / runs.len() as f64;
        let mut note = String::new();
        if let Some(sw) = runs[0].summary["swats_switched_at"].as_array() {
            let steps: Vec<u64> = sw.iter().filter_map(|t| t["step"].as_u64()).collect();
            note = if steps.is_empty() {
                "did not switch to SGD".into()
            } else {
                format!(
                    "switched to SGD in {} of {} tensors, first at step {}",
                    steps.len(),
                    sw.len(),
                    steps.iter().min().unwrap_or(&0)
                )
            };
            switch_notes.push(format!("SWATS {note}."));
            if let Some(first) = steps.iter().min() {
                switch_markers.push((
                    *first as f64,
                    format!("SWATS switches to SGD (step {first})"),
                ));
            }
        }
        rows.push(vec![
            esc(spec_text),
            if budget.seeds > 1 {
                format!("{} ± {:.2}", pct(mean_acc), 100.0 * spread / 2.0)
            } else {
                pct(mean_acc)
            },
            format!("{train_loss:.4}"),
            format!("{ms:.2}"),
            esc(&note),
        ]);
        results.push((spec_text.clone(), mean_acc, train_loss, ms));
    }
    csv.save(&out.join("data/optimizers.csv"))?;
    loss_csv.save(&out.join("data/optimizers_loss.csv"))?;
    let loss_svg = out.join("data/optimizers_loss.svg");
    plot::line_chart(
        &loss_svg,
        &LineChart {
            title: "training loss (mean of 10 steps)",
            x_label: "step",
            y_label: "log10 training loss",
            series: loss_series,
            log_x: false,
            secondary: None,
            markers: switch_markers,
            cap_blowup: false,
            bands: loss_bands,
        },
    )?;
    let acc_svg = out.join("data/optimizers_accuracy.svg");
    chart(
        &acc_svg,
        "test accuracy after each epoch",
        "epoch",
        "test accuracy",
        acc_series,
        acc_bands,
        false,
    )?;
    let mut sorted = results.clone();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let fastest = results
        .iter()
        .min_by(|a, b| a.3.total_cmp(&b.3))
        .expect("at least one optimizer");
    let slowest = results
        .iter()
        .max_by(|a, b| a.3.total_cmp(&b.3))
        .expect("at least one optimizer");
    let mut summary = vec![
        format!(
            "After {} epoch(s), the best test accuracy was {} with <code>{}</code> and the lowest {} with <code>{}</code>.",
            budget.epochs,
            pct(sorted[0].1),
            esc(&sorted[0].0),
            pct(sorted[sorted.len() - 1].1),
            esc(&sorted[sorted.len() - 1].0)
        ),
        format!(
            "A step took {:.2} ms with <code>{}</code> and {:.2} ms with <code>{}</code>: the optimizer is a small part of a step of this network.",
            fastest.3,
            esc(&fastest.0),
            slowest.3,
            esc(&slowest.0)
        ),
    ];
    summary.extend(switch_notes.into_iter().map(|n| esc(&n)));
    let (sam_lines, mut claims) = sam_flatness(&first_runs, budget)?;
    summary.extend(sam_lines);
    claims.extend(optimizer_claims(&results, budget.seeds));
    Ok(Section {
        id: "optimizers",
        title: "Optimizers compared".into(),
        summary,
        table: Some(table(&["optimizer", "test accuracy", "final train loss", "ms / step", "note"], &rows)),
        figures: vec![
            Figure { svg: loss_svg, caption: "Training loss of the MLP 784-256-128-10, batch 64, same seed and data order for every optimizer.".into(), data: vec!["data/optimizers_loss.csv".into()] },
            Figure { svg: acc_svg, caption: "Test accuracy (2,000 held-out digits) after each epoch.".into(), data: vec!["data/optimizers.csv".into()] },
        ],
        commands,
        claims,
    })
}

/// The lecture's claims about adaptive optimizers against SGD, from the comparison's
/// results `(spec, test accuracy, final train loss, ms/step)`: a difference counts when it
/// exceeds 10% (training loss) or one percentage point (accuracy).
fn optimizer_claims(results: &[(String, f64, f64, f64)], seeds: usize) -> Vec<Claim> {
    let find = |name: &str, momentum: bool| {
        results.iter().find(|r| {
            spec::parse(&r.0).is_ok_and(|s| {
                s.name == name
                    && matches!(s.get("momentum"), Some(spec::Value::Num(m)) if *m > 0.0)
                        == momentum
            })
        })
    };
    let mut claims = Vec::new();
    let seeds_note = format!("{seeds} seed(s)");
    if let (Some(adam), Some(sgd)) = (find("adam", false), find("sgd", false)) {
        claims.push(Claim::new(
            "Adam trains faster than plain SGD (lower training loss on the same budget)",
            format!(
                "final train loss {:.4} (<code>{}</code>) vs {:.4} (<code>{}</code>); margin 10%, {seeds_note}",
                adam.2, esc(&adam.0), sgd.2, esc(&sgd.0)
            ),
            Verdict::from(adam.2 < 0.9 * sgd.2, adam.2 > 1.1 * sgd.2),
        ));
    }
    if let (Some(sgdm), Some(adam)) = (find("sgd", true), find("adam", false)) {
        claims.push(Claim::new(
            "SGD with momentum generalizes better than Adam",
            format!(
                "test accuracy {} (<code>{}</code>) vs {} (<code>{}</code>); margin 1 point, {seeds_note}",
                pct(sgdm.1), esc(&sgdm.0), pct(adam.1), esc(&adam.0)
            ),
            Verdict::from(sgdm.1 > adam.1 + 0.01, sgdm.1 < adam.1 - 0.01),
        ));
    }
    claims
}

/// Runs `optimizer` with `schedule` over the budget's seeds; its command joins `commands`.
fn scheduled(
    out: &Path,
    budget: &Budget,
    optimizer: &str,
    name: &str,
    schedule: Option<String>,
    commands: &mut Vec<String>,
) -> Result<Vec<Run>> {
    let mut c = config(
        out,
        &format!("schedules/{}", slug(name)),
        budget,
        optimizer,
        64,
        0,
    );
    c.schedule = schedule;
    commands.push(command(&c));
    run_seeds(&c, budget.seeds)
}

/// A row of the schedules table: run, schedule, mean test accuracy, mean final train loss.
fn schedule_row(name: &str, schedule: Option<&str>, runs: &[Run]) -> Vec<String> {
    vec![
        esc(name),
        esc(schedule.unwrap_or("(none)")),
        pct(mean_of(runs, Run::test_accuracy)),
        format!("{:.4}", mean_of(runs, Run::train_loss)),
    ]
}

/// Study 2: schedules, and Adam with and without warm-up at a high learning rate.
pub fn schedules(out: &Path, budget: &Budget) -> Result<Section> {
    let n = budget.train_limit.unwrap_or(8000);
    let total = (budget.epochs * n.div_ceil(64)) as u64;
    let third = (total / 3).max(1);
    let warm = (total / 10).max(1);
    let variants: Vec<(&str, Option<String>)> = vec![
        ("constant", None),
        (
            "step decay",
            Some(format!("step(step_size={third}, gamma=0.1)")),
        ),
        ("cosine", Some(format!("cosine(t_max={total})"))),
        ("SGDR", Some(format!("sgdr(t_0={third})"))),
        (
            "one-cycle",
            Some(format!("onecycle(max_lr=0.1, total_steps={total})")),
        ),
        (
            "warm-up + cosine",
            Some(format!(
                "warmup_cosine(warmup_steps={warm}, total_steps={total})"
            )),
        ),
    ];
    let base = "sgd(lr=0.1, momentum=0.9)";
    let (mut lr_series, mut loss_series, mut rows, mut commands) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut csv = Table::new(&["schedule", "step", "lr", "loss"]);
    let mut results = Vec::new();
    let (mut loss_bands, mut adam_bands) = (Vec::new(), Vec::new());
    for (name, sched) in &variants {
        let runs = scheduled(out, budget, base, name, sched.clone(), &mut commands)?;
        let r = &runs[0];
        for s in &r.steps {
            csv.row([
                *name,
                num(s.0).as_str(),
                num(s.3).as_str(),
                num(s.1).as_str(),
            ]);
        }
        lr_series.push(Path2 {
            label: name.to_string(),
            points: r.steps.iter().map(|s| (s.0, s.3)).collect(),
        });
        let (mean, band) = loss_curves(&runs, 10);
        if runs.len() > 1 {
            loss_bands.push((loss_series.len(), band));
        }
        loss_series.push(Path2 {
            label: name.to_string(),
            points: mean,
        });
        rows.push(schedule_row(name, sched.as_deref(), &runs));
        results.push((name.to_string(), mean_of(&runs, Run::test_accuracy)));
    }
    // Adam at a high learning rate, with and without warm-up.
    let high = "adam(lr=0.01)";
    let warmup = format!(
        "linear(start_factor=0.01, total_iters={})",
        (total / 5).max(1)
    );
    let mut adam_series = Vec::new();
    let mut adam_notes = Vec::new();
    for (label, sched) in [
        ("adam(lr=0.01), no warm-up", None),
        ("adam(lr=0.01), linear warm-up", Some(warmup.clone())),
    ] {
        let runs = scheduled(out, budget, high, label, sched.clone(), &mut commands)?;
        let early_max = mean_of(&runs, |r| {
            r.steps
                .iter()
                .take(50)
                .map(|s| s.1)
                .fold(f64::NEG_INFINITY, f64::max)
        });
        let acc = mean_of(&runs, Run::test_accuracy);
        adam_notes.push((label, early_max, acc));
        let (mean, band) = loss_curves(&runs, 5);
        if runs.len() > 1 {
            adam_bands.push((adam_series.len(), band));
        }
        adam_series.push(Path2 {
            label: label.to_string(),
            points: mean,
        });
        rows.push(schedule_row(label, sched.as_deref(), &runs));
    }
    csv.save(&out.join("data/schedules.csv"))?;
    let lr_svg = out.join("data/schedules_lr.svg");
    chart(
        &lr_svg,
        &format!("learning rate of {base} under each schedule"),
        "step",
        "learning rate",
        lr_series,
        Vec::new(),
        false,
    )?;
    let loss_svg = out.join("data/schedules_loss.svg");
    chart(
        &loss_svg,
        "training loss under each schedule (mean of 10 steps)",
        "step",
        "log10 training loss",
        loss_series,
        loss_bands,
        false,
    )?;
    let adam_svg = out.join("data/adam_warmup.svg");
    chart(
        &adam_svg,
        "Adam at lr 0.01 with and without warm-up",
        "step",
        "log10 training loss",
        adam_series,
        adam_bands,
        false,
    )?;
    results.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (no, yes) = (&adam_notes[0], &adam_notes[1]);
    let summary = vec![
        format!(
            "With <code>{base}</code>, the best schedule was {} ({}) and the worst {} ({}).",
            esc(&results[0].0),
            pct(results[0].1),
            esc(&results[results.len() - 1].0),
            pct(results[results.len() - 1].1)
        ),
        format!(
            "Adam at lr 0.01: the largest loss in the first 50 steps was {:.3} without warm-up and {:.3} with it; test accuracy {} vs {}. {}",
            no.1,
            yes.1,
            pct(no.2),
            pct(yes.2),
            if yes.1 < no.1 && yes.2 >= no.2 {
                "Here warm-up helped, as the lecture suggests."
            } else if yes.2 < no.2 {
                "Here warm-up did not help the final accuracy."
            } else {
                "Here the difference was small."
            }
        ),
    ];
    Ok(Section {
        id: "schedules",
        title: "Learning-rate schedules".into(),
        summary,
        table: Some(table(
            &["run", "schedule", "test accuracy", "final train loss"],
            &rows,
        )),
        figures: vec![
            Figure {
                svg: lr_svg,
                caption: "The learning rate each schedule gave every step.".into(),
                data: vec!["data/schedules.csv".into()],
            },
            Figure {
                svg: loss_svg,
                caption: "Training loss under each schedule.".into(),
                data: vec!["data/schedules.csv".into()],
            },
            Figure {
                svg: adam_svg,
                caption: format!("Adam at a high learning rate, without and with {warmup}."),
                data: vec![],
            },
        ],
        commands,
        claims: Vec::new(),
    })
}

/// SAM's claim, measured: for each `sam(BASE, ...)` run whose BASE also ran, the curvature
/// (ε-sharpness, top Hessian eigenvalue) of both final weights, and whether SAM's is flatter
/// by both measures.
fn sam_flatness(runs: &[(String, PathBuf)], budget: &Budget) -> Result<(Vec<String>, Vec<Claim>)> {
    let mut out = Vec::new();
    let mut claims = Vec::new();
    for (text, dir) in runs {
        let sam = spec::parse(text)?;
        if sam.name != "sam" {
            continue;
        }
        let Some((None, spec::Value::Spec(base))) = sam.args.first() else {
            continue;
        };
        let Some((base_text, base_dir)) = runs
            .iter()
            .find(|(t, _)| spec::parse(t).is_ok_and(|s| s == *base))
        else {
            continue;
        };
        let (s_sharp, s_top) = curvature(dir.clone(), budget.curvature_examples)?;
        let (b_sharp, b_top) = curvature(base_dir.clone(), budget.curvature_examples)?;
        let verdict = match (s_sharp < b_sharp, s_top < b_top) {
            (true, true) => {
                "SAM's minimum is the flatter by both measures, as Foret et al. report."
            }
            (false, false) => "SAM's minimum is not flatter here by either measure.",
            _ => "the two measures disagree on which minimum is flatter.",
        };
        out.push(format!(
            "Flatness after training, on {} training examples: <code>{}</code> reached ε-sharpness {s_sharp:.3} and top Hessian eigenvalue {s_top:.3}; its base <code>{}</code> {b_sharp:.3} and {b_top:.3}: {verdict}",
            budget.curvature_examples,
            esc(text),
            esc(base_text),
        ));
        claims.push(Claim::new(
            "SAM finds flatter minima than its base optimizer",
            format!("ε-sharpness {s_sharp:.3} vs {b_sharp:.3}, top eigenvalue {s_top:.3} vs {b_top:.3} (both measures must agree)"),
            Verdict::from(s_sharp < b_sharp && s_top < b_top, s_sharp > b_sharp && s_top > b_top),
        ));
    }
    Ok((out, claims))
}

/// Curvature of a checkpoint: (ε-sharpness, top Hessian eigenvalue), computed in f64.
fn curvature(dir: PathBuf, examples: usize) -> Result<(f64, f64)> {
    second_order(move || -> gradlab_candle::Result<(f64, f64)> {
        let (model, _) = load_model(&dir)?;
        let model = model.to_dtype(candle_core::DType::F64)?;
        let split = gradlab_candle::data::bundled()?;
        let idx: Vec<usize> = (0..examples.min(split.train.len()).max(1)).collect();
        let batches = idx
            .chunks(500)
            .map(|c| batch(&split.train, c))
            .collect::<gradlab_candle::Result<Vec<_>>>()?;
        let mut objective = NetworkObjective::new(&model, batches.clone())?;
        let x = objective.point()?;
        let sharp = epsilon_sharpness(&mut objective, &x, 1e-3, 10)?;
        let mut h = NetworkHessian::new(NetworkObjective::new(&model, batches)?)?;
        let top = lanczos(
            &mut h,
            &LanczosOptions {
                top: 1,
                bottom: 0,
                tol: 1e-3,
                max_iter: Some(25),
                seed: 0,
            },
        )?;
        Ok((sharp.value, top.top[0].value))
    })
    .map_err(anyhow::Error::from)
}

/// Study 3: batch size.
pub fn batch_size(out: &Path, budget: &Budget, optimizer: &str) -> Result<Section> {
    let n = budget.train_limit.unwrap_or(8000);
    let mut rows = Vec::new();
    let mut commands = Vec::new();
    let mut csv = Table::new(&[
        "batch_size",
        "ms_per_update",
        "s_per_epoch",
        "train_accuracy",
        "test_accuracy",
        "epsilon_sharpness",
        "top_eigenvalue",
    ]);
    let (mut train_acc, mut test_acc, mut per_update, mut per_epoch, mut sharp_pts, mut eig_pts) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut dirs = Vec::new();
    for &b in &budget.batch_sizes {
        let b = b.clamp(1, n);
        let c = config(out, &format!("batch/b{b}"), budget, optimizer, b, 0);
        commands.push(command(&c));
        let r = run(&c)?;
        let last = r.epochs.last().cloned().unwrap_or(Value::Null);
        let epoch_s = r.steps.last().map_or(f64::NAN, |s| s.4) / budget.epochs as f64;
        let (sharp, top) = curvature(r.dir.clone(), budget.curvature_examples)?;
        let ms = r.ms_per_step();
        csv.row([
            b.to_string().as_str(),
            num(ms).as_str(),
            num(epoch_s).as_str(),
            num(last["train_accuracy"].as_f64().unwrap_or(f64::NAN)).as_str(),
            num(r.test_accuracy()).as_str(),
            num(sharp).as_str(),
            num(top).as_str(),
        ]);
        rows.push(vec![
            b.to_string(),
            format!("{ms:.2}"),
            format!("{epoch_s:.2}"),
            pct(last["train_accuracy"].as_f64().unwrap_or(f64::NAN)),
            pct(r.test_accuracy()),
            format!("{sharp:.3}"),
            format!("{top:.3}"),
        ]);
        let x = b as f64;
        train_acc.push((x, last["train_accuracy"].as_f64().unwrap_or(f64::NAN)));
        test_acc.push((x, r.test_accuracy()));
        per_update.push((x, ms));
        per_epoch.push((x, 1e3 * epoch_s));
        sharp_pts.push((x, sharp));
        eig_pts.push((x, top));
        dirs.push((b, r.dir.clone()));
    }
    csv.save(&out.join("data/batch_size.csv"))?;
    let acc_svg = out.join("data/batch_accuracy.svg");
    chart(
        &acc_svg,
        &format!(
            "accuracy after {} epoch(s) against batch size",
            budget.epochs
        ),
        "batch size",
        "accuracy",
        vec![
            Path2 {
                label: "train (running, last epoch)".into(),
                points: train_acc,
            },
            Path2 {
                label: "test".into(),
                points: test_acc.clone(),
            },
        ],
        Vec::new(),
        true,
    )?;
    let time_svg = out.join("data/batch_time.svg");
    chart(
        &time_svg,
        "time against batch size",
        "batch size",
        "milliseconds",
        vec![
            Path2 {
                label: "per update".into(),
                points: per_update.clone(),
            },
            Path2 {
                label: "per epoch".into(),
                points: per_epoch.clone(),
            },
        ],
        Vec::new(),
        true,
    )?;
    let sharp_svg = out.join("data/batch_sharpness.svg");
    chart(
        &sharp_svg,
        "curvature at the end of training against batch size",
        "batch size",
        "value",
        vec![
            Path2 {
                label: "ε-sharpness (ε = 1e-3, %)".into(),
                points: sharp_pts.clone(),
            },
            Path2 {
                label: "top Hessian eigenvalue".into(),
                points: eig_pts.clone(),
            },
        ],
        Vec::new(),
        true,
    )?;
    let mut figures = vec![
        Figure { svg: acc_svg, caption: "Train and test accuracy; every batch size sees the same number of epochs.".into(), data: vec!["data/batch_size.csv".into()] },
        Figure { svg: time_svg, caption: "Wall time per update and per epoch (larger batches: fewer, slower updates).".into(), data: vec!["data/batch_size.csv".into()] },
        Figure { svg: sharp_svg, caption: format!("Keskar et al.'s ε-sharpness and the largest Hessian eigenvalue, on {} training examples.", budget.curvature_examples), data: vec!["data/batch_size.csv".into()] },
    ];
    let mut summary = Vec::new();
    let mut claims = Vec::new();
    if let (Some(small), Some(large)) = (dirs.first(), dirs.last()) {
        if small.0 != large.0 {
            let l = landscape(
                &small.1,
                Some(&large.1),
                &LandscapeOptions {
                    examples: budget.curvature_examples,
                    points: 21,
                    ..LandscapeOptions::default()
                },
            )?;
            if let Some(curve) = &l.interpolation {
                let svg = out.join("data/batch_interpolation.svg");
                crate::landscape_cmd::write_curve(
                    curve,
                    &out.join("data"),
                    "batch_interpolation",
                    &format!(
                        "loss from batch {} (α = 0) to batch {} (α = 1)",
                        small.0, large.0
                    ),
                    "α",
                )?;
                figures.push(Figure { svg, caption: "Keskar et al.'s figure: the loss on the line through the small-batch and the large-batch solution.".into(), data: vec!["data/batch_interpolation.csv".into()] });
            }
            let (s0, s1) = (sharp_pts[0].1, sharp_pts[sharp_pts.len() - 1].1);
            let (e0, e1) = (eig_pts[0].1, eig_pts[eig_pts.len() - 1].1);
            summary.push(format!(
                "Batch {} reached {} test accuracy, batch {} reached {}. ε-sharpness went from {s0:.3} to {s1:.3} and the top eigenvalue from {e0:.3} to {e1:.3}: {}",
                small.0,
                pct(test_acc[0].1),
                large.0,
                pct(test_acc[test_acc.len() - 1].1),
                if s1 > s0 && e1 > e0 {
                    "the large-batch solution is sharper, as Keskar et al. report."
                } else if s1 < s0 && e1 < e0 {
                    "here the large-batch solution is flatter, which contradicts Keskar et al. (with equal epochs the large batch takes far fewer steps and stops early in a flat region)."
                } else {
                    "the two measures disagree on which solution is sharper."
                }
            ));
            let (a0, a1) = (test_acc[0].1, test_acc[test_acc.len() - 1].1);
            let (t0, t1) = (per_epoch[0].1, per_epoch[per_epoch.len() - 1].1);
            claims.push(Claim::new(
                "Large batches take less time per epoch (parallel hardware)",
                format!(
                    "{t0:.0} ms per epoch at batch {} vs {t1:.0} ms at batch {}; margin 10%",
                    small.0, large.0
                ),
                Verdict::from(t1 < 0.9 * t0, t1 > 1.1 * t0),
            ));
            claims.push(Claim::new(
                "Small batches generalize better than large ones (same epochs)",
                format!(
                    "test accuracy {} at batch {} vs {} at batch {}; margin 1 point, one seed",
                    pct(a0),
                    small.0,
                    pct(a1),
                    large.0
                ),
                Verdict::from(a0 > a1 + 0.01, a0 < a1 - 0.01),
            ));
            claims.push(Claim::new(
                "Large batches end in sharper minima",
                format!("ε-sharpness {s0:.3} → {s1:.3}, top eigenvalue {e0:.3} → {e1:.3} from batch {} to {} (both measures must agree)", small.0, large.0),
                Verdict::from(s1 > s0 && e1 > e0, s1 < s0 && e1 < e0),
            ));
            summary.push(format!(
                "An update took {:.2} ms at batch {} and {:.2} ms at batch {}, an epoch {:.0} ms and {:.0} ms.",
                per_update[0].1,
                small.0,
                per_update[per_update.len() - 1].1,
                large.0,
                per_epoch[0].1,
                per_epoch[per_epoch.len() - 1].1
            ));
        }
    }
    Ok(Section {
        id: "batch-size",
        title: "Batch size: time, accuracy, flat and sharp minima".into(),
        summary,
        table: Some(table(
            &[
                "batch",
                "ms / update",
                "s / epoch",
                "train acc.",
                "test acc.",
                "ε-sharpness",
                "top eigenvalue",
            ],
            &rows,
        )),
        figures,
        commands,
        claims,
    })
}

/// Study 4: training stuck is not small gradient.
pub fn stuck(out: &Path, budget: &Budget) -> Result<Section> {
    let c = config(out, "stuck", budget, "sgd(lr=0.05)", 64, 0);
    let r = run(&c)?;
    let loss: Vec<(f64, f64)> =
        windowed(&r.steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(), 10);
    let grad: Vec<(f64, f64)> =
        windowed(&r.steps.iter().map(|s| (s.0, s.2)).collect::<Vec<_>>(), 10);
    let svg = out.join("data/stuck_loss_gradient.svg");
    plot::line_chart(
        &svg,
        &LineChart {
            title: "training loss and gradient norm (means of 10 steps)",
            x_label: "step",
            y_label: "training loss",
            series: vec![Path2 {
                label: "loss".into(),
                points: loss.clone(),
            }],
            log_x: false,
            secondary: Some((
                "gradient norm".into(),
                Path2 {
                    label: "gradient norm".into(),
                    points: grad.clone(),
                },
            )),
            markers: Vec::new(),
            cap_blowup: false,
            bands: Vec::new(),
        },
    )?;
    let mut csv = Table::new(&["step", "loss", "grad_norm"]);
    for s in &r.steps {
        csv.row([num(s.0).as_str(), num(s.1).as_str(), num(s.2).as_str()]);
    }
    csv.save(&out.join("data/stuck.csv"))?;
    let opts = HessianOptions {
        top: 3,
        bottom: 3,
        trace: true,
        density: (5, 40),
        per_layer: false,
        batches: 1,
        batch_size: budget.curvature_examples.min(512),
        ..HessianOptions::default()
    };
    let report = hessian_report(r.dir.clone(), opts)?;
    gradlab::io::write_atomic(
        &out.join("data/stuck_hessian.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let density = crate::hessian_cmd::density_points(&report);
    let dsvg = out.join("data/stuck_density.svg");
    chart(
        &dsvg,
        "Hessian eigenvalue density at the end (SLQ)",
        "eigenvalue",
        "log10 density",
        vec![Path2 {
            label: "density".into(),
            points: density,
        }],
        Vec::new(),
        false,
    )?;
    let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
    let list = |k: &str| {
        report[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| format!("{:.4}", v.as_f64().unwrap_or(f64::NAN)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let peak = grad.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let last_grad = grad.last().map_or(f64::NAN, |p| p.1);
    let (first_loss, last_loss) = (
        loss.first().map_or(f64::NAN, |p| p.1),
        loss.last().map_or(f64::NAN, |p| p.1),
    );
    let summary = vec![
        format!(
            "The loss fell from {first_loss:.3} to {last_loss:.3}, while the gradient norm ended at {last_grad:.3} ({:.0}% of its peak {peak:.3}): {}",
            100.0 * last_grad / peak,
            if last_grad > 0.3 * peak {
                "the gradient did not become small although the loss levelled off, so the slowdown is not explained by a small gradient."
            } else {
                "here the gradient did shrink with the loss."
            }
        ),
        format!(
            "At the end (f64 Hessian on {} examples, {}): top eigenvalues {}, bottom eigenvalues {}, minimum ratio {:.3}, kind <b>{}</b> (gradient norm {:.3e}).",
            report["examples"],
            esc(report["hvp_method"].as_str().unwrap_or("")),
            list("top_eigenvalues"),
            list("bottom_eigenvalues"),
            f("minimum_ratio"),
            esc(report["kind"].as_str().unwrap_or("?")),
            f("gradient_norm")
        ),
    ];
    Ok(Section {
        id: "stuck",
        title: "Training stuck is not small gradient".into(),
        summary,
        table: None,
        figures: vec![
            Figure { svg, caption: "Loss (left axis) and gradient norm (right axis) of plain SGD.".into(), data: vec!["data/stuck.csv".into()] },
            Figure { svg: dsvg, caption: "Eigenvalue density of the Hessian at the end of training: a bulk near zero and a few large outliers.".into(), data: vec!["data/stuck_hessian.json".into()] },
        ],
        commands: vec![command(&c), format!("gradlab hessian --checkpoint {} --trace --density density.svg", r.dir.display())],
        claims: vec![Claim::new(
            "Training stuck is not small gradient",
            format!("the loss went from {first_loss:.3} to {last_loss:.3} with the gradient norm ending at {:.0}% of its peak (holds above 30%, fails below 10%)", 100.0 * last_grad / peak),
            Verdict::from(last_grad > 0.3 * peak, last_grad < 0.1 * peak),
        )],
    })
}

/// Runs optimizers on a surface; the figure, CSV and one line per optimizer.
#[allow(clippy::too_many_arguments)]
fn surface_figure(
    out: &Path,
    surface: Surface,
    start: [f64; 2],
    specs: &[&str],
    steps: u64,
    caption: &str,
    markers: Vec<Marker>,
    extra: Vec<Path2>,
) -> Result<(Figure, Vec<String>, String)> {
    let mut paths = Vec::new();
    let mut lines = Vec::new();
    let mut csv = Table::new(&["optimizer", "step", "x", "y", "loss"]);
    for s in specs {
        let spec = spec::parse(s)?;
        let mut opt = replay::optimizer_for_surface(&spec, Options::default())?;
        let t = replay::run(surface, start, opt.as_mut(), steps, |_, _| Ok(()));
        for r in &t.rows {
            csv.row([
                *s,
                r.step.to_string().as_str(),
                num(r.x).as_str(),
                num(r.y).as_str(),
                num(r.loss).as_str(),
            ]);
        }
        let last = t.rows.last().expect("start row");
        lines.push(match &t.stopped {
            Some(_) => format!(
                "<code>{}</code> diverged after {} steps",
                esc(s),
                t.rows.len() - 1
            ),
            None => format!(
                "<code>{}</code> ended at ({:.3}, {:.3}) with loss {:.3e}",
                esc(s),
                last.x,
                last.y,
                last.loss
            ),
        });
        paths.push(Path2 {
            label: s.to_string(),
            points: t.rows.iter().map(|r| (r.x, r.y)).collect(),
        });
    }
    paths.extend(extra);
    let name = surface.name();
    csv.save(&out.join(format!("data/surface_{name}.csv")))?;
    let svg = out.join(format!("data/surface_{name}.svg"));
    plot::surface_plot(
        &svg,
        &gradlab::surface::Function::Builtin(surface),
        &format!("{name}: {steps} steps from ({}, {})", start[0], start[1]),
        &paths,
        &markers,
        true,
    )?;
    let command = format!(
        "gradlab surface --function {name} --start={},{} --steps {steps} {} --plot {name}.svg",
        start[0],
        start[1],
        specs
            .iter()
            .map(|s| format!("--optimizer '{s}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok((
        Figure {
            svg,
            caption: caption.to_string(),
            data: vec![format!("data/surface_{name}.csv")],
        },
        lines,
        command,
    ))
}

/// Study 5: the error surfaces.
pub fn surfaces(out: &Path) -> Result<Section> {
    let mut figures = Vec::new();
    let mut summary = Vec::new();
    let mut commands = Vec::new();
    // (surface, start, optimizers, steps, caption)
    type Case<'a> = (Surface, [f64; 2], Vec<&'a str>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (Surface::Rosenbrock, [-1.5, 2.0], vec!["sgd(lr=0.0005, momentum=0.9)", "adam(lr=0.02)", "rmsprop(lr=0.01)", "lion(lr=0.005)"], 500, "Rosenbrock's curved valley: the minimum (1, 1) lies at the end of a long, nearly flat valley."),
        (Surface::Himmelblau, [0.0, 0.0], vec!["sgd(lr=0.01)", "sgd(lr=0.01, momentum=0.9)", "adam(lr=0.1)", "adagrad(lr=0.5)"], 200, "Himmelblau's four minima: which one an optimizer reaches depends on its path."),
        (Surface::Bowl, [-8.0, 1.0], vec!["sgd(lr=0.19)", "sgd(lr=0.05)", "adagrad(lr=0.5)", "adam(lr=0.1)"], 200, "A convex bowl with condition number 100: a fixed learning rate small enough for the steep direction crawls along the flat one; adaptive ones rescale each coordinate."),
    ];
    for (surface, start, specs, steps, caption) in cases {
        let (fig, lines, cmd) = surface_figure(
            out,
            surface,
            start,
            &specs,
            steps,
            caption,
            Vec::new(),
            Vec::new(),
        )?;
        summary.push(format!("{}: {}.", surface.name(), lines.join("; ")));
        figures.push(fig);
        commands.push(cmd);
    }
    Ok(Section {
        id: "surfaces",
        title: "Error surfaces".into(),
        summary,
        table: None,
        figures,
        commands,
        claims: Vec::new(),
    })
}
