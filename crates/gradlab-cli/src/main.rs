//! `gradlab`: every gradlab feature from a shell.

mod bench_cmd;
mod critical_cmd;
mod csv;
mod hessian_cmd;
mod interrupt;
mod lab;
mod landscape_cmd;
mod lr_find_cmd;
mod plot;
mod ranks;
mod schedule_cmd;
mod serve;
mod surface_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

/// Optimizers, learning-rate schedules and loss-landscape diagnostics.
#[derive(Parser)]
#[command(name = "gradlab", version, about, long_about = None)]
struct Cli {
    /// Threads for everything (gradlab's kernels, candle's ops); default: GRADLAB_THREADS,
    /// RAYON_NUM_THREADS, or all cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run optimizers on an analytic 2-D surface; write the trajectories (CSV) and the
    /// contour plot with every path (SVG).
    Surface(surface_cmd::SurfaceArgs),
    /// Print or plot a schedule's learning rate and momentum, step by step.
    Schedule(schedule_cmd::ScheduleArgs),
    /// Run the learning-rate range test and suggest a learning rate.
    LrFind(lr_find_cmd::LrFindArgs),
    /// Classify a point of a surface by its Hessian (minimum, maximum, saddle, degenerate),
    /// or find every critical point in a box.
    Critical(critical_cmd::CriticalArgs),
    /// Train a network (logreg, mlp, cnn) on MNIST-format data, with metrics, checkpoints
    /// and exact resume.
    Train(Box<train_cmd::TrainArgs>),
    /// The Hessian of a trained network at a checkpoint: extreme eigenvalues, trace,
    /// density, minimum ratio, per-tensor curvature.
    Hessian(hessian_cmd::HessianArgs),
    /// Loss slices around a trained network: along random filter-normalised directions
    /// (1-D and 2-D), and the interpolation to a second checkpoint.
    Landscape(landscape_cmd::LandscapeArgs),
    /// The lecture's experiments on the bundled MNIST digits, as an HTML report.
    Lab(lab::LabArgs),
    /// Compare optimizers on the same network and budget (an HTML report).
    Compare(lab::CompareArgs),
    /// Small to large batches: time, accuracy, sharpness (an HTML report).
    BatchStudy(lab::BatchStudyArgs),
    /// Time optimizer steps against the memory-bandwidth roofline.
    Bench(bench_cmd::BenchArgs),
    /// The interactive playground in the browser: optimizers moving on surfaces (built-in
    /// or typed), their state, the Hessian where you click, momentum on a quadratic.
    Serve(serve::ServeArgs),
}

fn main() {
    let cli = Cli::parse();
    let threads = match gradlab_candle::threads::configure(cli.threads) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Surface(args) => surface_cmd::run(args),
        Command::Schedule(args) => schedule_cmd::run(args),
        Command::LrFind(args) => lr_find_cmd::run(args),
        Command::Critical(args) => critical_cmd::run(args),
        Command::Train(args) => train_cmd::run(*args),
        Command::Hessian(args) => hessian_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args, threads),
        Command::Lab(args) => lab::run(args),
        Command::Compare(args) => lab::compare(args),
        Command::BatchStudy(args) => lab::batch_study(args),
        Command::Landscape(args) => landscape_cmd::run(args),
        Command::Serve(args) => serve::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
