//! Study: the error surface, changed — the same network with and without batch
//! normalization, on standardized inputs and on raw 0–255 pixels: its curvature (top Hessian
//! eigenvalue, the bulk against the outliers of its spectrum), the largest learning rate the
//! LR range test finds stable, filter-normalized loss slices on one colour scale, and the
//! training curves at one common learning rate.

use super::report::{esc, table, Claim, Figure, Section, Verdict};
use super::runs::*;
use super::Budget;
use crate::csv::{num, Table};
use crate::plot::{self, Field, Path2};
use anyhow::Result;
use gradlab::schedule::range_test::RangeTest;
use gradlab_candle::analysis::{hessian_report, HessianOptions};
use gradlab_candle::landscape::{landscape, LandscapeOptions};
use gradlab_candle::train::{self, InputScale, TrainConfig};
use std::path::Path;

/// The optimizer and common learning rate every variant trains with.
const OPTIMIZER: &str = "sgd(lr=0.01, momentum=0.9)";

/// One variant of the network and its inputs.
struct Variant {
    name: &'static str,
    batch_norm: bool,
    inputs: InputScale,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "standardized inputs",
        batch_norm: false,
        inputs: InputScale::Standardized,
    },
    Variant {
        name: "standardized + batch norm",
        batch_norm: true,
        inputs: InputScale::Standardized,
    },
    Variant {
        name: "raw 0–255 inputs",
        batch_norm: false,
        inputs: InputScale::Raw,
    },
    Variant {
        name: "raw 0–255 + batch norm",
        batch_norm: true,
        inputs: InputScale::Raw,
    },
];

/// What one variant measured.
struct Measured {
    top: f64,
    /// |λ| at the 90th percentile of the spectral density.
    bulk: f64,
    stable_lr: f64,
    /// Whether the range test diverged (else `stable_lr` is its last rate, a lower bound).
    diverged: bool,
    train_loss: f64,
    test_accuracy: f64,
}

/// Study: the error surface, changed by normalization.
pub fn error_surface(out: &Path, budget: &Budget) -> Result<Section> {
    let quick = budget.is_small();
    let epochs = budget.epochs.min(2);
    let small = Budget {
        epochs,
        ..budget.clone()
    };
    let mut measured = Vec::new();
    let mut commands = Vec::new();
    let mut curves = Vec::new();
    let mut slices_1d = Vec::new();
    let mut fields = Vec::new();
    let mut csv = Table::new(&["variant", "alpha", "beta", "train_loss"]);
    let mut curve_csv = Table::new(&["variant", "step", "loss"]);
    let mut range_csv = Table::new(&["variant", "lr", "smoothed_loss"]);
    for v in &VARIANTS {
        let mut c = config(
            out,
            &format!("error_surface/{}", slug(v.name)),
            &small,
            OPTIMIZER,
            64,
            0,
        );
        c.model.batch_norm = v.batch_norm;
        c.inputs = v.inputs;
        commands.push(command(&c));
        let (stable_lr, diverged) = largest_stable_lr(&c, &mut range_csv, v.name)?;
        let r = run(&c)?;
        for s in &r.steps {
            curve_csv.row([v.name, num(s.0).as_str(), num(s.1).as_str()]);
        }
        curves.push(Path2 {
            label: v.name.into(),
            points: log_loss_curve(&r, 10),
        });
        // The surface the optimizer starts on: the same initial weights (one step at lr 0
        // writes them to a checkpoint), the loss in training mode.
        let mut at_init = c.clone();
        at_init.optimizer = "sgd(lr=0)".into();
        at_init.epochs = 1;
        at_init.train_limit = Some(64);
        at_init.out = c.out.with_file_name(format!("{}_init", slug(v.name)));
        let init = run(&at_init)?;
        let report = hessian_report(
            init.dir.clone(),
            HessianOptions {
                top: 1,
                bottom: 1,
                trace: false,
                density: (3, if quick { 20 } else { 30 }),
                per_layer: false,
                batches: 1,
                batch_size: budget.curvature_examples.min(512),
                training_mode: true,
                ..HessianOptions::default()
            },
        )?;
        let top = report["top_eigenvalues"][0].as_f64().unwrap_or(f64::NAN);
        let bulk = abs_quantile(&report, 0.9);
        let l = landscape(
            &init.dir,
            None,
            &LandscapeOptions {
                span: 1.0,
                points: if quick { 9 } else { 11 },
                examples: budget.curvature_examples.min(500),
                seed: 0,
                data_dir: None,
                training_mode: true,
            },
        )?;
        slices_1d.push(Path2 {
            label: v.name.into(),
            points: l
                .slice_1d
                .alphas
                .iter()
                .zip(&l.slice_1d.train)
                .map(|(a, y)| (*a, y.max(1e-12).log10()))
                .collect(),
        });
        for (j, y) in l.slice_2d.ys.iter().enumerate() {
            for (i, x) in l.slice_2d.xs.iter().enumerate() {
                csv.row([
                    v.name,
                    num(*x).as_str(),
                    num(*y).as_str(),
                    num(l.slice_2d.values[j][i]).as_str(),
                ]);
            }
        }
        fields.push((
            v.name.to_string(),
            Field {
                labels: ("α", "β"),
                xs: l.slice_2d.xs.clone(),
                ys: l.slice_2d.ys.clone(),
                values: l.slice_2d.values.iter().flatten().copied().collect(),
                minima: Vec::new(),
            },
        ));
        measured.push(Measured {
            top,
            bulk,
            stable_lr,
            diverged,
            train_loss: r.train_loss(),
            test_accuracy: r.test_accuracy(),
        });
    }
    csv.save(&out.join("data/error_surface_slices.csv"))?;
    curve_csv.save(&out.join("data/error_surface_training.csv"))?;
    range_csv.save(&out.join("data/error_surface_range_test.csv"))?;
    let slices_svg = out.join("data/error_surface_2d.svg");
    plot::field_panels(
        &slices_svg,
        "training loss on a filter-normalized plane through the initial weights",
        &fields,
    )?;
    let slice_svg = out.join("data/error_surface_1d.svg");
    chart(
        &slice_svg,
        "training loss along one filter-normalized direction",
        "α",
        "log10 training loss",
        slices_1d,
        Vec::new(),
        false,
    )?;
    let curve_svg = out.join("data/error_surface_training.svg");
    chart(
        &curve_svg,
        &format!("training at one common rate: {OPTIMIZER}"),
        "step",
        "log10 training loss",
        curves,
        Vec::new(),
        false,
    )?;

    let rows: Vec<Vec<String>> = VARIANTS
        .iter()
        .zip(&measured)
        .map(|(v, m)| {
            vec![
                esc(v.name),
                format!("{:.4e}", m.top),
                format!("{:.3e}", m.bulk),
                format!("{:.1}", m.top / m.bulk),
                if m.diverged {
                    format!("{:.3e}", m.stable_lr)
                } else {
                    format!("≥ {:.3e} (never diverged)", m.stable_lr)
                },
                format!("{:.4}", m.train_loss),
                pct(m.test_accuracy),
            ]
        })
        .collect();
    let [plain, bn, raw, raw_bn] = [&measured[0], &measured[1], &measured[2], &measured[3]];
    let summary = vec![
        format!(
            "Batch normalization on standardized inputs: top Hessian eigenvalue {:.3} → {:.3} ({:.1}× {}), outliers over the bulk λmax/λ₉₀ {:.1} → {:.1}, largest stable learning rate of the range test {:.3e} → {:.3e} ({:.1}×), final training loss at lr 0.01 {:.4} → {:.4}.",
            plain.top, bn.top, ratio(plain.top, bn.top), if bn.top < plain.top { "flatter" } else { "sharper" },
            plain.top / plain.bulk, bn.top / bn.bulk, plain.stable_lr, bn.stable_lr, bn.stable_lr / plain.stable_lr, plain.train_loss, bn.train_loss
        ),
        format!(
            "Raw 0–255 pixels instead of standardized ones: top eigenvalue {:.3} → {:.3e} ({:.0}×), largest stable rate {:.3e} → {:.3e}; with batch normalization on raw pixels the top eigenvalue is {:.3} and the stable rate {:.3e}: {}",
            plain.top, raw.top, raw.top / plain.top, plain.stable_lr, raw.stable_lr, raw_bn.top, raw_bn.stable_lr,
            if raw_bn.top < raw.top / 10.0 && raw_bn.stable_lr > 10.0 * raw.stable_lr {
                "normalizing inside the network undoes most of what the input scale did to the surface."
            } else {
                "normalizing inside the network does not undo what the input scale did to the surface."
            }
        ),
        "Curvature and slices are measured at the initial weights (the same for every variant but batch norm's scale and shift), where the optimizer starts, on the training loss as the optimizer sees it (batch norm with each batch's statistics), with f64 Hessian-vector products; the slices use two random filter-normalized directions (Li et al. 2018), the same seed for every variant, and one colour scale.".into(),
    ];
    let claims = vec![
        Claim::new(
            "Batch normalization makes the error surface smoother (lower top Hessian eigenvalue, larger stable learning rate)",
            format!(
                "top eigenvalue {:.3} without, {:.3} with; largest stable lr {:.3e} without, {:.3e} with (holds when both improve)",
                plain.top, bn.top, plain.stable_lr, bn.stable_lr
            ),
            Verdict::from(bn.top < plain.top && bn.stable_lr > plain.stable_lr, bn.top > plain.top && bn.stable_lr < plain.stable_lr),
        ),
        Claim::new(
            "Unnormalized inputs (raw 0–255 pixels) make the surface sharper and training harder",
            format!(
                "top eigenvalue {:.3e} raw vs {:.3} standardized; final train loss at lr 0.01 {:.4} vs {:.4}",
                raw.top, plain.top, raw.train_loss, plain.train_loss
            ),
            Verdict::from(raw.top > 10.0 * plain.top && raw.train_loss > plain.train_loss, raw.top < plain.top),
        ),
    ];
    Ok(Section {
        id: "error-surface",
        title: "The error surface, changed by normalization".into(),
        summary,
        table: Some(table(
            &["variant", "top eigenvalue λmax", "λ₉₀ (90th percentile of |λ|)", "λmax / λ₉₀", "largest stable lr (range test)", "final train loss (lr 0.01)", "test accuracy"],
            &rows,
        )),
        figures: vec![
            Figure { svg: slices_svg, caption: "2-D slices of the training loss around each variant's initial weights, on one colour scale.".into(), data: vec!["data/error_surface_slices.csv".into()] },
            Figure { svg: slice_svg, caption: "1-D slices through the initial weights along one filter-normalized direction.".into(), data: vec!["data/error_surface_slices.csv".into()] },
            Figure { svg: curve_svg, caption: "Training loss of the four variants at the same optimizer and learning rate.".into(), data: vec!["data/error_surface_training.csv".into(), "data/error_surface_range_test.csv".into()] },
        ],
        commands,
        claims,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if a > b {
        a / b
    } else {
        b / a
    }
}

/// The largest learning rate of an LR range test (SGD with momentum, exponential ramp from
/// 1e-6 to 10) before the loss diverged, and whether it diverged (if not: the last rate);
/// the range test's losses go to `csv`.
fn largest_stable_lr(c: &TrainConfig, csv: &mut Table, name: &str) -> Result<(f64, bool)> {
    let test = RangeTest {
        start_lr: 1e-6,
        end_lr: 10.0,
        num_iter: 80,
        ..RangeTest::default()
    };
    let r = train::lr_find(c, &test)?;
    for (lr, loss) in r.lrs.iter().zip(&r.smoothed) {
        csv.row([name, num(*lr).as_str(), num(*loss).as_str()]);
    }
    Ok(match r.diverged_at {
        None => (*r.lrs.last().unwrap_or(&f64::NAN), false),
        Some(i) => (r.lrs[i.saturating_sub(1)], true),
    })
}

/// The `q` quantile of |λ| under a Hessian report's spectral density (SLQ, on its grid).
fn abs_quantile(report: &serde_json::Value, q: f64) -> f64 {
    let values = |k: &str| -> Vec<f64> {
        report["density"][k]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
            .unwrap_or_default()
    };
    let (grid, density) = (values("grid"), values("density"));
    let mut mass: Vec<(f64, f64)> = grid
        .iter()
        .zip(&density)
        .map(|(x, d)| (x.abs(), d.max(0.0)))
        .collect();
    mass.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = mass.iter().map(|m| m.1).sum();
    let mut acc = 0.0;
    for (x, d) in &mass {
        acc += d;
        if acc >= q * total {
            return *x;
        }
    }
    f64::NAN
}
