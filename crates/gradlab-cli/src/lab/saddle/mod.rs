//! Study: saddle points and escape, on (1 − xy)², whose origin is a saddle with Hessian
//! eigenvalues −2 (along x = y) and +2 (along x = −y). Gradient descent started on the
//! stable direction (x = −y) converges to the saddle; started a little off it, it lingers near
//! the saddle's loss and then escapes, the longer the closer it started; gradient noise
//! escapes from the stable direction too; and the Hessian's most negative eigenvector gives a
//! step that lowers the loss at once. Every sentence of the section is built from these runs.

mod network;

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use crate::csv::{num, Table};
use crate::plot::{self, LineChart, Marker, Path2};
use anyhow::Result;
use gradlab::landscape::critical::{analyze, CriticalOptions};
use gradlab::landscape::{SurfaceHessian, SurfaceObjective};
use gradlab::optim::Options;
use gradlab::spec;
use gradlab::surface::replay::{self, GradientNoise};
use gradlab::surface::{Function, Surface};
use network::{diagnose_network, network_part};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The saddle's loss: f(0, 0) = 1.
const SADDLE_LOSS: f64 = 1.0;
/// "Near the saddle": the loss within this of the saddle's.
const NEAR: f64 = 0.01;
const STEPS: u64 = 300;

/// One run of the study.
struct Case {
    label: String,
    start: [f64; 2],
    spec: &'static str,
    noise: f64,
}

/// What a run did.
struct Outcome {
    label: String,
    points: Vec<(f64, f64)>,
    losses: Vec<f64>,
    /// Steps whose loss was within [`NEAR`] of the saddle's.
    near: usize,
    /// The first step whose loss fell below the saddle's by more than [`NEAR`].
    escaped_at: Option<usize>,
    /// Ended at the saddle (loss and point there).
    at_saddle: bool,
}

fn cases() -> Vec<Case> {
    let mut v = vec![Case {
        label: "on the stable direction".into(),
        start: [0.5, -0.5],
        spec: "sgd(lr=0.1)",
        noise: 0.0,
    }];
    for delta in [1e-2, 1e-5, 1e-8] {
        v.push(Case {
            label: format!("{delta:.0e} off it"),
            start: [0.5, -0.5 + delta],
            spec: "sgd(lr=0.1)",
            noise: 0.0,
        });
    }
    v.push(Case {
        label: "1e-5 off it, momentum 0.9".into(),
        start: [0.5, -0.5 + 1e-5],
        spec: "sgd(lr=0.1, momentum=0.9)",
        noise: 0.0,
    });
    v.push(Case {
        label: "on the stable direction, gradient noise σ = 0.01".into(),
        start: [0.5, -0.5],
        spec: "sgd(lr=0.1)",
        noise: 0.01,
    });
    v
}

fn run(case: &Case) -> Result<Outcome> {
    let surface = Surface::Product;
    let mut opt = replay::optimizer_for_surface(&spec::parse(case.spec)?, Options::default())?;
    let mut noise = GradientNoise::new(case.noise, 1)?;
    let t = replay::run_observed(
        surface,
        case.start,
        opt.as_mut(),
        STEPS,
        Some(&mut noise),
        |_, _| Ok(()),
        |_, _| {},
    );
    let losses: Vec<f64> = t.rows.iter().map(|r| r.loss).collect();
    let last = t.rows.last().expect("the start row");
    Ok(Outcome {
        label: case.label.clone(),
        points: t.rows.iter().map(|r| (r.x, r.y)).collect(),
        near: losses
            .iter()
            .filter(|l| (*l - SADDLE_LOSS).abs() < NEAR)
            .count(),
        escaped_at: losses.iter().position(|l| *l < SADDLE_LOSS - NEAR),
        at_saddle: (last.loss - SADDLE_LOSS).abs() < 1e-6 && last.x.hypot(last.y) < 1e-3,
        losses,
    })
}

fn verdict(o: &Outcome) -> String {
    match (o.at_saddle, o.escaped_at) {
        (true, _) => "converged to the saddle".into(),
        (false, Some(k)) => format!("escaped at step {k}"),
        (false, None) => "still near the saddle".into(),
    }
}

/// The study; `stalled` names the run where training stalled (the stuck study's) and the
/// number of examples for its Hessian.
pub fn saddle(out: &Path, stalled: Option<(PathBuf, usize)>) -> Result<Section> {
    let at = [0.0, 0.0];
    let analysis = analyze(
        &mut SurfaceHessian {
            surface: Surface::Product,
            at,
        },
        Some(&mut SurfaceObjective(Surface::Product)),
        &at,
        &CriticalOptions::default(),
    )?;
    let cases = cases();
    let outcomes = cases.iter().map(run).collect::<Result<Vec<_>>>()?;

    let mut csv = Table::new(&["run", "step", "x", "y", "loss"]);
    for o in &outcomes {
        for (k, ((x, y), l)) in o.points.iter().zip(&o.losses).enumerate() {
            csv.row([
                o.label.as_str(),
                &k.to_string(),
                &num(*x),
                &num(*y),
                &num(*l),
            ]);
        }
    }
    csv.save(&out.join("data/saddle.csv"))?;
    let runs_json: Vec<_> = cases
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| {
            json!({
                "run": o.label, "start": c.start, "optimizer": c.spec, "noise": c.noise,
                "steps_near_saddle": o.near, "escaped_at": o.escaped_at,
                "converged_to_saddle": o.at_saddle,
                "final_loss": o.losses.last(), "final_point": o.points.last().map(|p| [p.0, p.1]),
            })
        })
        .collect();
    gradlab::io::write_atomic(
        &out.join("data/saddle.json"),
        serde_json::to_string_pretty(&json!({
            "eigenvalues": analysis.eigenvalues, "kind": analysis.kind.to_string(),
            "escape": analysis.escape.as_ref().map(|e| json!({"direction": e.direction, "step": e.step, "loss_after": e.loss_after})),
            "runs": runs_json,
        }))?
        .as_bytes(),
    )?;

    // The map: every path, the saddle, and the Hessian's escape step.
    let mut markers = vec![Marker {
        label: format!("{} at (0, 0)", analysis.kind),
        at: (0.0, 0.0),
        color: plotters::style::RGBColor(204, 121, 167),
    }];
    let mut paths: Vec<Path2> = outcomes
        .iter()
        .map(|o| Path2 {
            label: o.label.clone(),
            points: o.points.clone(),
        })
        .collect();
    let mut summary = Vec::new();
    if let Some(e) = &analysis.escape {
        let t = e.step.unwrap_or(1.0);
        let to = (t * e.direction[0], t * e.direction[1]);
        paths.push(Path2 {
            label: "Hessian escape step".into(),
            points: vec![(0.0, 0.0), to],
        });
        markers.push(Marker {
            label: "after the escape step".into(),
            at: to,
            color: plotters::style::RGBColor(0, 158, 115),
        });
        summary.push(format!(
            "(1 − xy)² at the origin: gradient norm {:.1e}, Hessian eigenvalues {:.3} and {:.3} — a <b>{}</b>. One step of {:.2} along the eigenvector of the negative eigenvalue, ({:.3}, {:.3}), lowers the loss from {:.3} to {:.3}: where the gradient is zero, the Hessian still says which way is down.",
            analysis.gradient_norm, analysis.eigenvalues[0], analysis.eigenvalues[1], analysis.kind,
            t, e.direction[0], e.direction[1], analysis.loss, e.loss_after.unwrap_or(f64::NAN)
        ));
    }
    let map = out.join("data/saddle_map.svg");
    plot::surface_plot(
        &map,
        &Function::Builtin(Surface::Product),
        "(1 − xy)²: gradient descent near the saddle",
        &paths,
        &markers,
        false,
    )?;
    let curves = out.join("data/saddle_loss.svg");
    plot::line_chart(
        &curves,
        &LineChart {
            title: "loss per step (the saddle's loss is 1)",
            x_label: "step",
            y_label: "loss",
            series: outcomes
                .iter()
                .map(|o| Path2 {
                    label: o.label.clone(),
                    points: o
                        .losses
                        .iter()
                        .take(120)
                        .enumerate()
                        .map(|(k, l)| (k as f64, *l))
                        .collect(),
                })
                .collect(),
            log_x: false,
            secondary: None,
            markers: Vec::new(),
            cap_blowup: false,
            bands: Vec::new(),
        },
    )?;

    // The text, from the runs.
    let stable = &outcomes[0];
    summary.push(format!(
        "Plain gradient descent (<code>sgd(lr=0.1)</code>) started at (0.5, −0.5), on the saddle's stable direction (the eigenvector of +2): it <b>{}</b>, ending at loss {:.6} at ({:.1e}, {:.1e}) after {STEPS} steps, {} of them within {NEAR} of the saddle's loss. A small gradient here meant a saddle, not a minimum.",
        verdict(stable),
        stable.losses.last().copied().unwrap_or(f64::NAN),
        stable.points.last().map_or(f64::NAN, |p| p.0),
        stable.points.last().map_or(f64::NAN, |p| p.1),
        stable.near
    ));
    let off = &outcomes[1..4];
    let grows = off.windows(2).all(|w| w[1].near > w[0].near);
    summary.push(format!(
        "Started off the stable direction by δ: {}. {}",
        off.iter()
            .map(|o| format!("δ = {} lingered {} steps near the saddle's loss and {}", o.label.trim_end_matches(" off it"), o.near, verdict(o)))
            .collect::<Vec<_>>()
            .join("; "),
        if grows {
            format!(
                "The closer the start, the longer it lingers: {} steps for each factor 1000 in δ (the distance from the stable direction grows geometrically, so the time near the saddle goes with log(1/δ)).",
                off.windows(2).map(|w| format!("+{}", w[1].near - w[0].near)).collect::<Vec<_>>().join(" and ")
            )
        } else {
            "The lingering does not grow steadily with closeness here.".to_string()
        }
    ));
    let (plain, momentum) = (&outcomes[2], &outcomes[4]);
    summary.push(match (plain.escaped_at, momentum.escaped_at) {
        (Some(a), Some(b)) => format!(
            "From δ = 1e-5, momentum 0.9 escaped at step {b} against plain gradient descent's {a}: momentum {} here.",
            if b < a { "helps escape" } else { "does not help escape" }
        ),
        _ => format!(
            "From δ = 1e-5: plain gradient descent {}, with momentum 0.9 it {}.",
            verdict(plain),
            verdict(momentum)
        ),
    });
    let noisy = &outcomes[5];
    summary.push(format!(
        "With gradient noise (σ = 0.01 per coordinate, as a small batch's gradient) from the stable direction itself, gradient descent <b>{}</b>: noise pushes it off the direction that leads into the saddle.",
        verdict(noisy)
    ));

    let mut claims = surface_claims(&analysis, &outcomes);
    let network = match stalled {
        Some((dir, examples)) if dir.join("checkpoint").exists() => {
            let (text, json, claim) = network_part(out, &diagnose_network(dir, examples)?)?;
            summary.extend(text);
            claims.push(claim);
            Some(json)
        }
        _ => None,
    };
    if let Some(n) = &network {
        gradlab::io::write_atomic(
            &out.join("data/saddle_network.json"),
            serde_json::to_string_pretty(n)?.as_bytes(),
        )?;
    }

    let rows: Vec<Vec<String>> = cases
        .iter()
        .zip(&outcomes)
        .map(|(c, o)| {
            vec![
                esc(&o.label),
                format!("<code>{}</code>", esc(c.spec)),
                format!("({}, {})", c.start[0], c.start[1]),
                o.near.to_string(),
                o.escaped_at.map_or("–".into(), |k| k.to_string()),
                format!("{:.3e}", o.losses.last().copied().unwrap_or(f64::NAN)),
                verdict(o),
            ]
        })
        .collect();
    Ok(Section {
        id: "saddle",
        title: "Saddle points and escape".into(),
        summary,
        table: Some(table(
            &["run", "optimizer", "start", "steps near the saddle's loss", "escape step", "final loss", "outcome"],
            &rows,
        )),
        figures: vec![
            Figure {
                svg: map,
                caption: format!(
                    "Paths near the saddle of (1 − xy)²: from the stable direction gradient descent {}; started 1e-2 off it, it ends at ({:.2}, {:.2}) on the valley xy = 1; the short segment is the Hessian's escape step.",
                    verdict(stable),
                    off[0].points.last().map_or(f64::NAN, |p| p.0),
                    off[0].points.last().map_or(f64::NAN, |p| p.1)
                ),
                data: [
                    Some("data/saddle.csv"),
                    Some("data/saddle.json"),
                    network.as_ref().map(|_| "data/saddle_network.json"),
                ]
                .into_iter()
                .flatten()
                .map(String::from)
                .collect(),
            },
            Figure {
                svg: curves,
                caption: format!(
                    "Loss per step (first 120): the runs that escape sit on the plateau at the saddle's loss 1{}.",
                    if grows { ", the longer the closer they started" } else { "" }
                ),
                data: vec!["data/saddle.csv".into()],
            },
        ],
        commands: vec![
            "gradlab critical --function product --at=0,0 --json".into(),
            "gradlab surface --function product --start=0.5,-0.5 --optimizer 'sgd(lr=0.1)' --steps 300 --csv stable.csv".into(),
            "gradlab surface --function product --start=0.5,-0.49999 --optimizer 'sgd(lr=0.1)' --optimizer 'sgd(lr=0.1, momentum=0.9)' --steps 300 --csv off.csv".into(),
            "gradlab surface --function product --start=0.5,-0.5 --optimizer 'sgd(lr=0.1)' --noise 0.01 --seed 1 --steps 300 --csv noisy.csv".into(),
        ],
        claims,
    })
}

/// The lecture's claims about saddles, from the runs (`cases()`'s order) and the analysis of
/// the origin.
fn surface_claims(
    analysis: &gradlab::landscape::critical::Analysis,
    outcomes: &[Outcome],
) -> Vec<Claim> {
    let (stable, off, plain, momentum, noisy) = (
        &outcomes[0],
        &outcomes[1..4],
        &outcomes[2],
        &outcomes[4],
        &outcomes[5],
    );
    let grows = off.windows(2).all(|w| w[1].near > w[0].near);
    let all_escape = off.iter().all(|o| o.escaped_at.is_some());
    let mut claims = vec![
        Claim::new(
            "A small gradient can mean a saddle point: gradient descent can converge to one",
            format!(
                "from the stable direction: final loss {:.6} (the saddle's 1) after {STEPS} steps",
                stable.losses.last().copied().unwrap_or(f64::NAN)
            ),
            Verdict::from(
                stable.at_saddle,
                !stable.at_saddle && stable.escaped_at.is_some(),
            ),
        ),
        Claim::new(
            "Near a saddle, training lingers on a plateau, the longer the closer it starts",
            format!(
                "{} steps near the saddle's loss for δ = 1e-2, 1e-5, 1e-8, then {}",
                off.iter()
                    .map(|o| o.near.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if all_escape {
                    "escape"
                } else {
                    "not all escape"
                }
            ),
            Verdict::from(grows && all_escape, !grows),
        ),
        Claim::new(
            "Momentum helps escape saddle points",
            format!(
                "escape at step {} with momentum 0.9 vs {} without (δ = 1e-5)",
                momentum
                    .escaped_at
                    .map_or("never".into(), |k| k.to_string()),
                plain.escaped_at.map_or("never".into(), |k| k.to_string())
            ),
            match (momentum.escaped_at, plain.escaped_at) {
                (Some(m), Some(p)) => Verdict::from(m < p, m > p),
                (Some(_), None) => Verdict::Holds,
                (None, Some(_)) => Verdict::DoesNotHold,
                (None, None) => Verdict::Inconclusive,
            },
        ),
        Claim::new(
            "Gradient noise (small batches) escapes saddle points",
            format!(
                "from the stable direction with σ = 0.01: {}",
                verdict(noisy)
            ),
            Verdict::from(
                noisy.escaped_at.is_some() && !noisy.at_saddle,
                noisy.at_saddle,
            ),
        ),
    ];
    if let Some(e) = &analysis.escape {
        let after = e.loss_after.unwrap_or(f64::NAN);
        claims.push(Claim::new(
            "At a saddle, the eigenvector of a negative Hessian eigenvalue points the way down",
            format!("one step along it: loss {:.3} → {after:.3}", analysis.loss),
            Verdict::from(after < analysis.loss, after >= analysis.loss),
        ));
    }
    claims
}
