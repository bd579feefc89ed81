//! Study: Adam vs SGD with momentum, each tuned — the same learning-rate grid for both, the
//! best rate picked on a validation set carved from the training data (never the test set),
//! then train and test curves, the generalization gap and (on images) the curvature of the
//! end point, with SWATS, AdaBound, AdamW and Lookahead beside them. On two tasks: a CNN on
//! the digits and a character-level Transformer on the Book of Genesis.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::{self, Panel, Path2};
use anyhow::{Context, Result};
use gradlab::spec::format_number;
use gradlab_candle::char_lm::{CharCorpus, CharTransformer, CharTransformerConfig};
use gradlab_candle::models::{ModelKind, ModelSpec};
use gradlab_candle::train::{TrainConfig, Trainer};
use std::path::Path;

mod report;
use report::report_task;

/// The task an optimizer is tuned on.
#[derive(Clone, Copy, PartialEq)]
enum Task {
    /// The LeNet-like CNN on the digits.
    Vision,
    /// The character-level Transformer on Genesis.
    Text,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Vision => "vision",
            Task::Text => "text",
        }
    }
}

/// The text model's shape and its windows.
const TEXT_CONTEXT: usize = 24;

/// Every how many characters a training window starts (fewer windows in a quick lab).
fn text_stride(quick: bool) -> usize {
    if quick {
        48
    } else {
        24
    }
}

fn text_model(vocabulary: usize) -> CharTransformerConfig {
    CharTransformerConfig {
        vocabulary,
        context: TEXT_CONTEXT,
        width: 48,
        heads: 4,
        layers: 2,
    }
}

/// One finished run of the study.
struct Entry {
    task: Task,
    spec: String,
    lr: f64,
    run: Run,
}

impl Entry {
    /// The validation figure the rate is chosen by: accuracy on images, loss (in nats per
    /// character) on text; higher is better.
    fn score(&self) -> f64 {
        match self.task {
            Task::Vision => self.run.validation_accuracy(),
            Task::Text => -self.run.validation_loss(),
        }
    }
}

/// The learning-rate grid every optimizer is tuned on.
fn grid(quick: bool) -> Vec<f64> {
    if quick {
        vec![0.001, 0.01, 0.1]
    } else {
        vec![0.0001, 0.001, 0.01, 0.1]
    }
}

/// Study: Adam vs SGDM, tuned, on images and on text.
pub fn adam_vs_sgdm(out: &Path, budget: &Budget) -> Result<Section> {
    let quick = budget.is_small();
    let corpus = CharCorpus::bundled()?;
    let text_split = corpus.split(TEXT_CONTEXT, text_stride(quick), 0.1)?;
    let mut all = Vec::new();
    let mut commands = Vec::new();
    let mut summary = Vec::new();
    let mut claims = Vec::new();
    let mut figures = Vec::new();
    let mut rows = Vec::new();
    let mut grid_csv = Table::new(&[
        "task",
        "optimizer",
        "lr",
        "validation_loss",
        "validation_accuracy",
        "test_loss",
        "test_accuracy",
    ]);
    for task in [Task::Vision, Task::Text] {
        let train = |spec: &str, name: &str| -> Result<(TrainConfig, Run)> {
            let c = task_config(out, budget, task, spec, name, quick, text_split.train.len());
            let r = match task {
                Task::Vision => run(&c)?,
                Task::Text => run_with(&c, |c, on_event| {
                    let varmap = candle_nn::VarMap::new();
                    let vb = candle_nn::VarBuilder::from_varmap(
                        &varmap,
                        candle_core::DType::F32,
                        &candle_core::Device::Cpu,
                    );
                    let model = CharTransformer::new(text_model(corpus.vocabulary.len()), vb)?;
                    CharTransformer::seed_parameters(&varmap, c.seed)?;
                    let trainer =
                        Trainer::from_varmap(model, &varmap, text_split.clone(), c.clone())?;
                    Ok(trainer.run(None, on_event)?.record)
                })?,
            };
            Ok((c, r))
        };
        // The grid, for Adam and SGDM.
        let mut best = Vec::new();
        for (family, make) in [("adam", adam as fn(f64) -> String), ("sgdm", sgdm)] {
            let mut tried = Vec::new();
            for &lr in &grid(quick) {
                let spec = make(lr);
                let (c, r) = train(&spec, &format!("{}_{}", family, slug(&format_number(lr))))?;
                if lr == grid(quick)[0] {
                    commands.push(command_of(task, &c));
                }
                grid_csv.row([
                    task.name(),
                    family,
                    num(lr).as_str(),
                    num(r.validation_loss()).as_str(),
                    num(r.validation_accuracy()).as_str(),
                    num(r.test_loss()).as_str(),
                    num(r.test_accuracy()).as_str(),
                ]);
                tried.push(Entry {
                    task,
                    spec,
                    lr,
                    run: r,
                });
            }
            let pick = tried
                .iter()
                .enumerate()
                .filter(|(_, e)| e.score().is_finite())
                .max_by(|a, b| a.1.score().total_cmp(&b.1.score()))
                .map(|(i, _)| i)
                .context("no learning rate of the grid trained")?;
            best.push(tried.swap_remove(pick));
            all.extend(tried);
        }
        let adam_lr = best[0].lr;
        // Beside them, at Adam's chosen rate.
        for spec in [
            format!("adamw(lr={}, weight_decay=0.01)", format_number(adam_lr)),
            format!("adabound(lr={}, final_lr=0.1)", format_number(adam_lr)),
            format!("swats(lr={})", format_number(adam_lr)),
            format!(
                "lookahead(adam(lr={}), k=5, alpha=0.5)",
                format_number(adam_lr)
            ),
        ] {
            let (_, r) = train(&spec, &slug(&spec))?;
            best.push(Entry {
                task,
                spec,
                lr: adam_lr,
                run: r,
            });
        }
        let (section_rows, lines, task_claims, task_figures) =
            report_task(out, task, budget, &best)?;
        rows.extend(section_rows);
        summary.extend(lines);
        claims.extend(task_claims);
        figures.extend(task_figures);
        all.extend(best);
    }
    grid_csv.save(&out.join("data/adam_vs_sgdm_grid.csv"))?;
    let grid_svg = out.join("data/adam_vs_sgdm_grid.svg");
    let mut grid_panels = Vec::new();
    for task in [Task::Vision, Task::Text] {
        let mut series = Vec::new();
        for family in ["adam", "sgd"] {
            let points: Vec<(f64, f64)> = all
                .iter()
                .filter(|e| {
                    e.task == task
                        && e.spec.starts_with(family)
                        && grid(quick).contains(&e.lr)
                        && is_grid_spec(&e.spec)
                })
                .map(|e| (e.lr.log10(), e.run.validation_loss()))
                .collect();
            let mut points = points;
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Path2 {
                label: if family == "adam" {
                    "Adam".into()
                } else {
                    "SGD, momentum 0.9".into()
                },
                points,
            });
        }
        grid_panels.push(Panel {
            title: format!("{}: validation loss after training", task.name()),
            series,
        });
    }
    plot::small_multiples(
        &grid_svg,
        "the learning-rate grid: validation loss by rate",
        ("log10 learning rate", "validation loss"),
        &grid_panels,
        2,
        0,
    )?;
    figures.insert(0, Figure {
        svg: grid_svg,
        caption: format!("Each optimizer's validation loss over the grid {}: the rate with the best validation figure (accuracy on images, loss on text) is the one reported; the test set played no part in the choice.", grid(quick).iter().map(|l| format_number(*l)).collect::<Vec<_>>().join(", ")),
        data: vec!["data/adam_vs_sgdm_grid.csv".into()],
    });
    summary.insert(0, format!(
        "Adam and SGD with momentum 0.9 each trained at every rate of the grid {} with {} held out of the training data for validation; the best rate on validation is reported below, with AdamW, AdaBound, SWATS and Lookahead at Adam's chosen rate. The image task is the CNN on the digits, the text task a 2-layer character Transformer (width 48, 4 heads, {TEXT_CONTEXT} characters of context) on the Book of Genesis (King James Version, {} windows).",
        grid(quick).iter().map(|l| format_number(*l)).collect::<Vec<_>>().join(", "),
        if quick { "a sixth" } else { "an eighth" },
        text_split.source
    ));
    Ok(Section {
        id: "adam-vs-sgdm",
        title: "Adam vs SGDM, each tuned, on images and on text".into(),
        summary,
        table: Some(table(
            &[
                "task",
                "optimizer (rate chosen on validation)",
                "validation",
                "train loss",
                "test loss",
                "generalization gap (test − train loss)",
                "test accuracy / perplexity",
                "note",
            ],
            &rows,
        )),
        figures,
        commands,
        claims,
    })
}

fn adam(lr: f64) -> String {
    format!("adam(lr={})", format_number(lr))
}

fn sgdm(lr: f64) -> String {
    format!("sgd(lr={}, momentum=0.9)", format_number(lr))
}

/// Whether `spec` is one of the grid's plain Adam or SGDM specs.
fn is_grid_spec(spec: &str) -> bool {
    gradlab::spec::parse(spec).is_ok_and(|s| {
        (s.name == "adam" && s.args.len() == 1) || (s.name == "sgd" && s.args.len() == 2)
    })
}

/// The configuration of one run of `task`.
fn task_config(
    out: &Path,
    budget: &Budget,
    task: Task,
    spec: &str,
    name: &str,
    quick: bool,
    text_windows: usize,
) -> TrainConfig {
    let dir = format!("adam_vs_sgdm/{}_{name}", task.name());
    match task {
        Task::Vision => {
            let small = Budget {
                epochs: budget.epochs.min(3),
                ..budget.clone()
            };
            let mut c = config(out, &dir, &small, spec, 64, 0);
            c.model = ModelSpec::new(ModelKind::Cnn);
            c.validation = Some(if quick { 200 } else { 1000 });
            c
        }
        Task::Text => {
            let mut c = TrainConfig::new(
                ModelSpec {
                    widths: Vec::new(),
                    ..ModelSpec::new(ModelKind::Custom)
                },
                spec,
                &out.join("runs").join(&dir),
            );
            // One pass over the windows by default (a step of this model costs ~50 ms on 2
            // cores); more with more epochs (`--full`).
            c.epochs = if budget.epochs > 5 {
                budget.epochs / 3
            } else {
                1
            };
            c.batch_size = 64;
            c.overwrite = true;
            c.validation = Some(text_windows / if quick { 6 } else { 8 });
            c.train_limit = quick.then_some(text_windows / 4);
            c
        }
    }
}

/// The command that repeats a run (the text model is the lab's own: named in words).
fn command_of(task: Task, c: &TrainConfig) -> String {
    match task {
        Task::Vision => command(c),
        Task::Text => format!(
            "# text: gradlab_candle::char_lm::CharTransformer (width 48, 4 heads, 2 layers, context {TEXT_CONTEXT}) through train::Trainer, optimizer '{}', {} epoch(s), batch 64, validation {}",
            c.optimizer,
            c.epochs,
            c.validation.unwrap_or(0)
        ),
    }
}
