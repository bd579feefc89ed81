//! Study: optimizers compared on the same network and budget, with SAM's flatness and the
//! lecture's claims about adaptive optimizers against SGD.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::{self, LineChart, Path2};
use anyhow::{Context, Result};
use gradlab::spec;
use std::path::{Path, PathBuf};

/// Study 1: optimizers on the same network and budget; with `tune`, each optimizer's rates
/// are first picked from one grid of factors on a validation set ([`super::tuning`]).
pub fn optimizers(
    out: &Path,
    budget: &Budget,
    specs: &[String],
    schedule: Option<&str>,
    tune: bool,
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
    let mut tuned_any = false;
    for (i, asked) in specs.iter().enumerate() {
        spec::parse(asked)
            .with_context(|| format!("--optimizer {}", gradlab::error::quote(asked)))?;
        let tuned = if tune {
            Some(super::tuning::tune(out, budget, asked)?)
        } else {
            None
        };
        tuned_any |= tuned.is_some();
        let spec_text = tuned.as_ref().map_or(asked, |t| &t.spec);
        let mut runs = Vec::new();
        for seed in 0..budget.seeds as u64 {
            let mut c = config(
                out,
                &format!("optimizers/{}_{seed}", slug(asked)),
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
        let losses: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| log_loss_curve(r, 10)).collect();
        let accs: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| {
                r.epochs
                    .iter()
                    .map(|e| ((e.epoch as f64) + 1.0, e.test_accuracy))
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
                    e.epoch.to_string().as_str(),
                    num(e.train_loss).as_str(),
                    num(e.test_loss).as_str(),
                    num(e.test_accuracy).as_str(),
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
        first_runs.push((asked.clone(), runs[0].dir.clone()));
        let acc: Vec<f64> = runs.iter().map(Run::test_accuracy).collect();
        let mean_acc = acc.iter().sum::<f64>() / acc.len() as f64;
        let spread = acc.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - acc.iter().copied().fold(f64::INFINITY, f64::min);
        let ms = runs.iter().map(Run::ms_per_step).sum::<f64>() / runs.len() as f64;
        let train_loss = runs.iter().map(Run::train_loss).sum::<f64>() / runs.len() as f64;
        let mut note = String::new();
        if let Some(sw) = &runs[0].summary.swats_switched_at {
            let steps: Vec<u64> = sw.iter().filter_map(|t| t.step).collect();
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
            match &tuned {
                Some(t) => format!(
                    "×{} ({})",
                    t.factor,
                    t.tried
                        .iter()
                        .map(|(f, a)| format!("{f}: {}", a.map_or("diverged".to_string(), pct)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "as given".into(),
            },
            esc(&note),
        ]);
        results.push((spec_text.clone(), mean_acc, train_loss, ms));
    }
    csv.save(&out.join("data/optimizers.csv"))?;
    loss_csv.save(&out.join("data/optimizers_loss.csv"))?;
    let loss_svg = out.join("data/optimizers_loss.svg");
    let acc_svg = out.join("data/optimizers_accuracy.svg");
    if specs.len() > SMALL_MULTIPLES_FROM {
        // Many optimizers: one panel per family, the first optimizer as the shared baseline.
        plot::small_multiples(
            &loss_svg,
            "training loss by optimizer family (mean of 10 steps; grey: the baseline)",
            ("step", "log10 training loss"),
            &by_family(specs, &loss_series),
            3,
            1,
        )?;
        plot::small_multiples(
            &acc_svg,
            "test accuracy after each epoch, by optimizer family (grey: the baseline)",
            ("epoch", "test accuracy"),
            &by_family(specs, &acc_series),
            3,
            1,
        )?;
    } else {
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
        chart(
            &acc_svg,
            "test accuracy after each epoch",
            "epoch",
            "test accuracy",
            acc_series,
            acc_bands,
            false,
        )?;
    }
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
    let mut summary = Vec::new();
    if tuned_any {
        summary.push(format!(
            "Every optimizer's learning rates (its own and those of the optimizers it wraps) were scaled by each factor of the same grid ({}), one epoch each with {} training examples held out for validation; the factor with the best validation accuracy was kept, so the ranking compares optimizers, not hand-picked rates.",
            super::tuning::factors(budget)
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            super::tuning::validation_examples(budget)
        ));
    }
    summary.extend([
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
    ]);
    summary.extend(switch_notes.into_iter().map(|n| esc(&n)));
    let (sam_lines, mut claims) = sam_flatness(&first_runs, budget)?;
    summary.extend(sam_lines);
    claims.extend(optimizer_claims(&results, budget.seeds));
    Ok(Section {
        id: "optimizers",
        title: "Optimizers compared".into(),
        summary,
        table: Some(table(&["optimizer", "test accuracy", "final train loss", "ms / step", "rate factor chosen (validation accuracy by factor)", "note"], &rows)),
        figures: vec![
            Figure { svg: loss_svg, caption: "Training loss of the MLP 784-256-128-10, batch 64, same seed and data order for every optimizer; one panel per family on shared axes, the first optimizer in grey in each.".into(), data: vec!["data/optimizers_loss.csv".into()] },
            Figure { svg: acc_svg, caption: "Test accuracy (2,000 held-out digits) after each epoch.".into(), data: vec!["data/optimizers.csv".into()] },
        ],
        commands,
        claims,
    })
}

/// Above this many optimizers the curves are drawn as small multiples by family.
const SMALL_MULTIPLES_FROM: usize = 6;

/// The family of an optimizer (by its spec's name), for small multiples.
fn family(name: &str) -> &'static str {
    match name {
        "sgd" | "asgd" | "rprop" => "SGD family",
        "adagrad" | "rmsprop" | "adadelta" => "adaptive",
        "adam" | "adamw" | "nadam" | "radam" | "adamax" | "adabound" | "swats" | "adopt"
        | "ademamix" | "amsgrad" => "Adam variants",
        "lamb" | "lars" => "large batch",
        _ => "wrappers and modern",
    }
}

/// Panels of `series` (one per spec, in `specs`' order) grouped by family, each beginning
/// with the first series as the shared baseline.
fn by_family(specs: &[String], series: &[Path2]) -> Vec<plot::Panel> {
    let order = [
        "SGD family",
        "adaptive",
        "Adam variants",
        "large batch",
        "wrappers and modern",
    ];
    let baseline = Path2 {
        label: format!("baseline: {}", series[0].label),
        points: series[0].points.clone(),
    };
    order
        .iter()
        .filter_map(|f| {
            let mine: Vec<Path2> = specs
                .iter()
                .zip(series)
                .skip(1)
                .filter(|(spec, _)| spec::parse(spec).is_ok_and(|s| family(&s.name) == *f))
                .map(|(_, s)| Path2 {
                    label: s.label.clone(),
                    points: s.points.clone(),
                })
                .collect();
            (!mine.is_empty()).then(|| plot::Panel {
                title: (*f).to_string(),
                series: std::iter::once(Path2 {
                    label: baseline.label.clone(),
                    points: baseline.points.clone(),
                })
                .chain(mine)
                .collect(),
            })
        })
        .collect()
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
            "Flatness after training (each optimizer at its chosen rate), on {} training examples: <code>{}</code> reached ε-sharpness {s_sharp:.3} and top Hessian eigenvalue {s_top:.3}; its base <code>{}</code> {b_sharp:.3} and {b_top:.3}: {verdict}",
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
