//! One task's part of the Adam-vs-SGDM section: the table rows, the text, the claims and the
//! figure of the chosen runs.

use super::*;

pub(super) type TaskReport = (Vec<Vec<String>>, Vec<String>, Vec<Claim>, Vec<Figure>);

/// Table rows, text, claims and figures of one task's chosen runs (Adam's and SGDM's best,
/// then the four beside them).
pub(super) fn report_task(
    out: &Path,
    task: Task,
    budget: &Budget,
    best: &[Entry],
) -> Result<TaskReport> {
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
