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

type TaskReport = (Vec<Vec<String>>, Vec<String>, Vec<Claim>, Vec<Figure>);

/// Table rows, text, claims and figures of one task's chosen runs (Adam's and SGDM's best,
/// then the four beside them).
fn report_task(out: &Path, task: Task, budget: &Budget, best: &[Entry]) -> Result<TaskReport> {
    let mut rows = Vec::new();
    let mut curvature_of = Vec::new();
    for e in best {
        let r = &e.run;
        let gap = r.test_loss() - r.train_loss();
        let mut note = String::new();
        if let Some(sw) = &r.summary.swats_switched_at {
            let steps: Vec<u64> = sw.iter().filter_map(|t| t.step).collect();
            note = match steps.iter().min() {
                Some(first) => format!(
                    "switched to SGD in {} of {} tensors, first at step {first}",
                    steps.len(),
                    sw.len()
                ),
                None => "did not switch to SGD".into(),
            };
        }
        if task == Task::Vision && is_grid_spec(&e.spec) {
            let (sharp, top) = curvature(r.dir.clone(), budget.curvature_examples.min(256))?;
            note = format!("ε-sharpness {sharp:.3}, top Hessian eigenvalue {top:.3}");
            curvature_of.push((sharp, top));
        }
        rows.push(vec![
            task.name().into(),
            format!("<code>{}</code>", esc(&e.spec)),
            match task {
                Task::Vision => format!("accuracy {}", pct(r.validation_accuracy())),
                Task::Text => format!("perplexity {:.3}", r.validation_loss().exp()),
            },
            format!("{:.4}", r.train_loss()),
            format!("{:.4}", r.test_loss()),
            format!("{gap:+.4}"),
            match task {
                Task::Vision => pct(r.test_accuracy()),
                Task::Text => format!("perplexity {:.3}", r.test_loss().exp()),
            },
            esc(&note),
        ]);
    }
    let (adam, sgdm) = (&best[0], &best[1]);
    let gap = |e: &Entry| e.run.test_loss() - e.run.train_loss();
    let mut lines = Vec::new();
    let mut claims = Vec::new();
    match task {
        Task::Vision => {
            let (a, s) = (adam.run.test_accuracy(), sgdm.run.test_accuracy());
            lines.push(format!(
                "Images: Adam chose lr {} and reached test accuracy {} (generalization gap {:+.4}); SGDM chose lr {} and reached {} (gap {:+.4}).{}",
                format_number(adam.lr), pct(a), gap(adam), format_number(sgdm.lr), pct(s), gap(sgdm),
                match curvature_of.as_slice() {
                    [ca, cs] => format!(" At the end Adam's point has ε-sharpness {:.3} and top eigenvalue {:.3}, SGDM's {:.3} and {:.3}.", ca.0, ca.1, cs.0, cs.1),
                    _ => String::new(),
                }
            ));
            claims.push(Claim::new(
                "Tuned SGDM generalizes better than tuned Adam on images (the lecture: Adam trains fast, SGDM generalizes)",
                format!("CNN, rates chosen on validation: test accuracy {} (SGDM, lr {}) vs {} (Adam, lr {}); margin 1 point, 1 seed", pct(s), format_number(sgdm.lr), pct(a), format_number(adam.lr)),
                Verdict::from(s > a + 0.01, s < a - 0.01),
            ));
            claims.push(Claim::new(
                "Adam trains faster than SGDM (lower training loss on the same budget)",
                format!(
                    "CNN: final train loss {:.4} (Adam) vs {:.4} (SGDM); margin 10%",
                    adam.run.train_loss(),
                    sgdm.run.train_loss()
                ),
                Verdict::from(
                    adam.run.train_loss() < 0.9 * sgdm.run.train_loss(),
                    adam.run.train_loss() > 1.1 * sgdm.run.train_loss(),
                ),
            ));
        }
        Task::Text => {
            let (a, s) = (adam.run.test_loss().exp(), sgdm.run.test_loss().exp());
            lines.push(format!(
                "Text: Adam chose lr {} and reached test perplexity {a:.3} (gap {:+.4}); SGDM chose lr {} and reached {s:.3} (gap {:+.4}) — {}",
                format_number(adam.lr), gap(adam), format_number(sgdm.lr), gap(sgdm),
                if a < 0.95 * s { "on the Transformer Adam is clearly ahead, as the lecture's list of Transformer, BERT and Tacotron trained with Adam suggests." } else if s < 0.95 * a { "on this small Transformer SGDM did as well or better: the lecture's split does not show at this size." } else { "the two are within 5%: at this size the lecture's split does not show." }
            ));
            claims.push(Claim::new(
                "Adam is the better choice for a Transformer on text",
                format!("character Transformer, rates chosen on validation: test perplexity {a:.3} (Adam, lr {}) vs {s:.3} (SGDM, lr {}); margin 5%", format_number(adam.lr), format_number(sgdm.lr)),
                Verdict::from(a < 0.95 * s, s < 0.95 * a),
            ));
        }
    }
    let svg = out.join(format!("data/adam_vs_sgdm_{}.svg", task.name()));
    // Both panels on the step axis: the training loss as 10-step means, the test loss at
    // the end of each epoch.
    let train_curves: Vec<Path2> = best
        .iter()
        .map(|e| Path2 {
            label: e.spec.clone(),
            points: windowed(
                &e.run.steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
                10,
            ),
        })
        .collect();
    let test_curves: Vec<Path2> = best
        .iter()
        .map(|e| Path2 {
            label: e.spec.clone(),
            points: e
                .run
                .epochs
                .iter()
                .map(|ep| ((ep.step as f64), ep.test_loss))
                .collect(),
        })
        .collect();
    plot::small_multiples(
        &svg,
        &format!(
            "{}: training loss and test loss at the chosen rates",
            task.name()
        ),
        ("step", "loss"),
        &[
            Panel {
                title: "training loss (mean of 10 steps)".into(),
                series: train_curves,
            },
            Panel {
                title: "test loss at the end of each epoch".into(),
                series: test_curves,
            },
        ],
        2,
        0,
    )?;
    let mut csv = Table::new(&[
        "optimizer",
        "epoch",
        "train_loss",
        "test_loss",
        "validation_loss",
    ]);
    for e in best {
        for ep in &e.run.epochs {
            csv.row([
                e.spec.as_str(),
                ep.epoch.to_string().as_str(),
                num(ep.train_loss).as_str(),
                num(ep.test_loss).as_str(),
                num(ep.validation_loss.unwrap_or(f64::NAN)).as_str(),
            ]);
        }
    }
    let data = format!("data/adam_vs_sgdm_{}.csv", task.name());
    csv.save(&out.join(&data))?;
    let figure = Figure {
        svg,
        caption: match task {
            Task::Vision => "The CNN on the digits: training loss by step and test loss after each epoch, each optimizer at its chosen rate.".into(),
            Task::Text => "The character Transformer on Genesis: training loss by step and test loss after each epoch (nats per character) at the chosen rates.".into(),
        },
        data: vec![data],
    };
    Ok((rows, lines, claims, vec![figure]))
}
