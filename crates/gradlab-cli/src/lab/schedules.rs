//! Study: learning-rate schedules, and Adam with and without warm-up at a high learning rate.

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
        claims: vec![Claim::new(
            "Adam needs warm-up at a high learning rate (early loss spikes)",
            format!(
                "largest loss in the first 50 steps at lr 0.01: {:.3} without warm-up, {:.3} with it; test accuracy {} vs {} (holds when warm-up lowers the spike by 10% without losing a point of accuracy)",
                no.1,
                yes.1,
                pct(no.2),
                pct(yes.2)
            ),
            Verdict::from(
                yes.1 < 0.9 * no.1 && yes.2 >= no.2 - 0.01,
                yes.1 > 1.1 * no.1 || yes.2 < no.2 - 0.01,
            ),
        )],
    })
}
