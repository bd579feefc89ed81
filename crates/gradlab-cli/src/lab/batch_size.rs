//! Study: batch size: time, accuracy, flat and sharp minima.

use super::report::{table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::Path2;
use anyhow::Result;
use gradlab_candle::landscape::{landscape, LandscapeOptions};
use std::path::Path;

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
        let train_accuracy = r.epochs.last().map_or(f64::NAN, |e| e.train_accuracy);
        let epoch_s = r.steps.last().map_or(f64::NAN, |s| s.4) / budget.epochs as f64;
        let (sharp, top) = curvature(r.dir.clone(), budget.curvature_examples)?;
        let ms = r.ms_per_step();
        csv.row([
            b.to_string().as_str(),
            num(ms).as_str(),
            num(epoch_s).as_str(),
            num(train_accuracy).as_str(),
            num(r.test_accuracy()).as_str(),
            num(sharp).as_str(),
            num(top).as_str(),
        ]);
        rows.push(vec![
            b.to_string(),
            format!("{ms:.2}"),
            format!("{epoch_s:.2}"),
            pct(train_accuracy),
            pct(r.test_accuracy()),
            format!("{sharp:.3}"),
            format!("{top:.3}"),
        ]);
        let x = b as f64;
        train_acc.push((x, train_accuracy));
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
