//! `gradlab lab`: the lecture's experiments measured on the bundled MNIST digits, and a
//! self-contained HTML report (`gradlab compare` and `gradlab batch-study` run single
//! studies into the same kind of report).

mod adam_vs_sgdm;
mod batch_size;
mod error_surface;
mod helps;
mod optimizers;
mod progress;
mod report;
pub(crate) mod runs;
mod saddle;
mod schedules;
mod stuck;
mod surfaces;
mod tuning;
mod warmup;

use anyhow::{Context, Result};
use report::Report;
use std::path::PathBuf;
use std::time::Instant;

/// Sizes of the studies.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Epochs per training run.
    pub epochs: usize,
    /// Training examples (None: all 8,000).
    pub train_limit: Option<usize>,
    /// Seeds per configuration.
    pub seeds: usize,
    /// Batch sizes of the batch-size study.
    pub batch_sizes: Vec<usize>,
    /// Examples for curvature measurements.
    pub curvature_examples: usize,
    /// A folder of full MNIST-format files instead of the bundled digits.
    pub data_dir: Option<PathBuf>,
}

/// How much the lab computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Small sizes, for tests.
    Quick,
    /// What fits about five minutes on two cores.
    Default,
    /// Everything at larger sizes: more epochs, three seeds, more curvature examples.
    Full,
}

impl Budget {
    /// Whether the runs are on a small slice of the data (a quick lab): the studies then
    /// shrink their own grids and sizes too.
    fn is_small(&self) -> bool {
        self.train_limit.is_some_and(|n| n <= 1000)
    }

    fn new(scale: Scale, seeds: usize) -> Self {
        match scale {
            Scale::Quick => Budget {
                epochs: 1,
                train_limit: Some(800),
                seeds: seeds.max(1),
                batch_sizes: vec![16, 800],
                curvature_examples: 200,
                data_dir: None,
            },
            Scale::Default => Budget {
                epochs: 5,
                train_limit: None,
                seeds: seeds.max(1),
                batch_sizes: vec![16, 64, 256, 1024, 8000],
                curvature_examples: 1000,
                data_dir: None,
            },
            Scale::Full => Budget {
                epochs: 15,
                train_limit: None,
                seeds: seeds.max(3),
                batch_sizes: vec![16, 32, 64, 128, 256, 1024, 4096, 8000],
                curvature_examples: 2000,
                data_dir: None,
            },
        }
    }
}

/// Arguments of `gradlab lab`.
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Recompute every run, even where the output folder holds a finished run of the same
    /// configuration (by default such runs are reused).
    #[arg(long)]
    fresh: bool,
    /// Output folder (the report is DIR/index.html).
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Small sizes (for tests; about a minute).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Everything at larger sizes: 15 epochs, 3 seeds, more batch sizes and curvature
    /// examples (tens of minutes).
    #[arg(long)]
    full: bool,
    /// A folder with full MNIST / Fashion-MNIST / KMNIST files (standard names) instead of
    /// the bundled 10,000 digits.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seeds per configuration (curves then show mean and spread).
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Epochs per training run (default 5; 1 with --quick).
    #[arg(long)]
    epochs: Option<usize>,
    /// Run only these studies (section ids, comma-separated), e.g. warmup,saddle.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
}

/// Arguments of `gradlab compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Optimizer specs to compare (repeat).
    #[arg(long = "optimizer", required = true)]
    optimizers: Vec<String>,
    /// A schedule for every run.
    #[arg(long)]
    schedule: Option<String>,
    /// Pick each optimizer's learning rates first: scaled by 0.1, 0.3, 1, 3 and 10, one
    /// epoch each on the training data minus 1,000 validation examples, the best kept.
    #[arg(long)]
    tune: bool,
    /// Seeds per optimizer.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Train on the first N examples only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Recompute every run, even where the output folder holds a finished run of the same
    /// configuration (by default such runs are reused).
    #[arg(long)]
    fresh: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `gradlab batch-study`.
#[derive(clap::Args, Debug)]
pub struct BatchStudyArgs {
    /// Batch sizes, e.g. 16,64,256,1024,8000.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024,8000")]
    batch_sizes: Vec<usize>,
    /// Optimizer spec.
    #[arg(long, default_value = "adam(lr=0.001)")]
    optimizer: String,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Train on the first N examples only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Recompute every run, even where the output folder holds a finished run of the same
    /// configuration (by default such runs are reused).
    #[arg(long)]
    fresh: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

fn prepare(out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out.join("data"))
        .with_context(|| format!("creating {}", out.display()))?;
    std::fs::create_dir_all(out.join("runs"))
        .with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

/// Runs every study and writes the report.
pub fn run(args: LabArgs) -> Result<()> {
    let started = Instant::now();
    prepare(&args.out)?;
    runs::set_fresh(args.fresh);
    let scale = match (args.quick, args.full) {
        (true, _) => Scale::Quick,
        (_, true) => Scale::Full,
        _ => Scale::Default,
    };
    let mut budget = Budget::new(scale, args.seeds);
    if let Some(e) = args.epochs {
        budget.epochs = e.max(1);
    }
    let data_note = match &args.data {
        Some(dir) => {
            // Checked now, not after the first studies.
            let split = gradlab_candle::data::load_dir(dir)
                .with_context(|| format!("--data {}", dir.display()))?;
            budget.data_dir = Some(dir.clone());
            let n = split.train.len();
            budget.batch_sizes.retain(|&b| b <= n);
            format!(
                "{} ({} training / {} test examples)",
                report::esc(&dir.display().to_string()),
                budget.train_limit.map_or(n, |l| l.min(n)),
                split.test.len()
            )
        }
        None => format!(
            "the bundled MNIST digits ({} training / 2,000 test examples)",
            budget
                .train_limit
                .map_or("8,000".to_string(), |n| n.to_string())
        ),
    };
    let mut report = Report::new(
        "gradlab lab: deep-learning optimization, measured",
        &format!(
            "Every number and figure below was measured by <code>gradlab lab{}</code> on {data_note}, {} epoch(s) per run, {} seed(s) (studies that need a spread use at least three).",
            match scale {
                Scale::Quick => " --quick",
                Scale::Full => " --full",
                Scale::Default => "",
            },
            budget.epochs,
            budget.seeds
        ),
    );
    let out = &args.out;
    crate::interrupt::install()?;
    type Study<'a> = Box<dyn FnOnce() -> Result<report::Section> + 'a>;
    let studies: Vec<(&str, &str, Study)> = vec![
        (
            "optimizers",
            "optimizers",
            Box::new(|| optimizers::optimizers(out, &budget, &runs::lab_optimizers(), None, true)),
        ),
        (
            "schedules",
            "schedules",
            Box::new(|| schedules::schedules(out, &budget)),
        ),
        (
            "batch-size",
            "batch size",
            Box::new(|| batch_size::batch_size(out, &budget, "adam(lr=0.001)")),
        ),
        (
            "stuck",
            "small gradient vs stuck",
            Box::new(|| stuck::stuck(out, &budget)),
        ),
        (
            "surfaces",
            "error surfaces",
            Box::new(|| surfaces::surfaces(out)),
        ),
        (
            "saddle",
            "saddle points",
            Box::new(|| {
                saddle::saddle(
                    out,
                    Some((
                        out.join("runs").join("stuck"),
                        budget.curvature_examples.min(512),
                    )),
                )
            }),
        ),
        (
            "warmup",
            "warm-up",
            Box::new(|| warmup::warmup(out, &budget)),
        ),
        (
            "error-surface",
            "the error surface, changed",
            Box::new(|| error_surface::error_surface(out, &budget)),
        ),
        (
            "adam-vs-sgdm",
            "Adam vs SGDM, tuned",
            Box::new(|| adam_vs_sgdm::adam_vs_sgdm(out, &budget)),
        ),
        (
            "helps",
            "what helps optimization",
            Box::new(|| helps::helps(out, &budget)),
        ),
    ];
    let ids: Vec<&str> = studies.iter().map(|s| s.0).collect();
    if let Some(only) = &args.only {
        if let Some(unknown) = only.iter().find(|o| !ids.contains(&o.as_str())) {
            anyhow::bail!(
                "--only {unknown}: no such study; the studies are {}",
                ids.join(", ")
            );
        }
    }
    let studies: Vec<(&str, &str, Study)> = studies
        .into_iter()
        .filter(|(id, _, _)| {
            args.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == id))
        })
        .collect();
    let total = studies.len();
    let mut not_run = Vec::new();
    for (i, (id, name, study)) in studies.into_iter().enumerate() {
        if crate::interrupt::requested() {
            not_run.push(name);
            continue;
        }
        let progress = progress::StudyProgress::start(out, id, name, i + 1, total);
        let result = study();
        progress.finish();
        match result {
            Ok(section) => report.push(section),
            Err(e) if crate::interrupt::caused(&e) => not_run.push(name),
            Err(e) => return Err(e),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if !not_run.is_empty() {
        report.interrupted(&format!(
            "Interrupted (Ctrl-C) after {:.0} s: {} of {total} studies are complete; not run: {}. \
             Run <code>gradlab lab</code> again for the full report.",
            seconds,
            total - not_run.len(),
            report::esc(&not_run.join(", "))
        ));
    }
    let reused = runs::reused_runs();
    report.footer(&format!(
        "Generated in {seconds:.0} s{}.",
        if reused > 0 {
            format!("; {reused} training run(s) reused from an earlier report in this folder (same configuration and gradlab version; --fresh recomputes them)")
        } else {
            String::new()
        }
    ));
    let path = report.write(out)?;
    if !not_run.is_empty() {
        eprintln!(
            "interrupted: report of {} of {total} studies: {}",
            total - not_run.len(),
            path.display()
        );
        std::process::exit(crate::interrupt::EXIT_STATUS);
    }
    println!("report: {} ({seconds:.0} s)", path.display());
    Ok(())
}

/// Runs one study into its own report (`gradlab compare`, `gradlab batch-study`).
fn single_study(
    out: &std::path::Path,
    title: &str,
    intro: &str,
    study: impl FnOnce() -> Result<report::Section>,
) -> Result<()> {
    prepare(out)?;
    let mut report = Report::new(title, intro);
    report.push(study()?);
    let path = report.write(out)?;
    println!("report: {}", path.display());
    Ok(())
}

/// `gradlab compare`.
pub fn compare(args: CompareArgs) -> Result<()> {
    runs::set_fresh(args.fresh);
    let budget = Budget {
        epochs: args.epochs.max(1),
        train_limit: args.train_limit,
        seeds: args.seeds.max(1),
        batch_sizes: Vec::new(),
        curvature_examples: 0,
        data_dir: None,
    };
    single_study(
        &args.out,
        "gradlab compare",
        "Optimizers compared on the same network, data and budget.",
        || {
            optimizers::optimizers(
                &args.out,
                &budget,
                &args.optimizers,
                args.schedule.as_deref(),
                args.tune,
            )
        },
    )
}

/// `gradlab batch-study`.
pub fn batch_study(args: BatchStudyArgs) -> Result<()> {
    runs::set_fresh(args.fresh);
    let budget = Budget {
        epochs: args.epochs.max(1),
        train_limit: args.train_limit,
        seeds: 1,
        batch_sizes: args.batch_sizes.clone(),
        curvature_examples: 1000,
        data_dir: None,
    };
    single_study(
        &args.out,
        "gradlab batch-study",
        "Small to large batches: time, accuracy, sharpness.",
        || batch_size::batch_size(&args.out, &budget, &args.optimizer),
    )
}
