//! Study: learning-rate schedules (Adam's warm-up has its own study, `warmup`).

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::Path2;
use anyhow::Result;
use std::path::Path;

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

/// Study 2: learning-rate schedules on SGD with momentum.
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
    let mut loss_bands = Vec::new();
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
    results.sort_by(|a, b| b.1.total_cmp(&a.1));
    let accuracy_of = |name: &str| {
        results
            .iter()
            .find(|r| r.0 == name)
            .map_or(f64::NAN, |r| r.1)
    };
    let constant = accuracy_of("constant");
    let decayed = accuracy_of("step decay").max(accuracy_of("cosine"));
    let summary = vec![
        format!(
            "With <code>{base}</code>, the best schedule was {} ({}) and the worst {} ({}).",
            esc(&results[0].0),
            pct(results[0].1),
            esc(&results[results.len() - 1].0),
            pct(results[results.len() - 1].1)
        ),
        "Adam with and without warm-up, RAdam and SWATS are compared in their own section (Does Adam need warm-up?).".into(),
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
        ],
        commands,
        claims: vec![Claim::new(
            "Decaying the learning rate (step or cosine) ends better than a constant rate",
            format!(
                "test accuracy {} with the better of step decay and cosine vs {} with a constant rate, {base}; margin half a point, {} seed(s)",
                pct(decayed),
                pct(constant),
                budget.seeds
            ),
            Verdict::from(decayed > constant + 0.005, decayed < constant - 0.005),
        )],
    })
}
