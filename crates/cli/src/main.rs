//! `predict-buy`: the command-line entry point. It parses arguments, calls one function
//! per command (in `commands/`), maps the outcome to an exit code — 0 success, 1 the
//! operation failed, 2 bad usage or invalid input — and prints the error chain.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod error;
mod progress;
mod project;
mod registry_url;
mod settings;

pub use error::{CliError, Outcome};

/// The server spends much of each request in allocation and release of small buffers;
/// mimalloc does that markedly faster than glibc's allocator under many threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc keeps the memory a program frees for its next allocations and returns it
/// to the system only a while later, and only when the program allocates again. A
/// server that has just loaded a model (reading a file of tens of megabytes, then
/// building the trees from it) and then idles, or answers small requests, would
/// keep that freed memory resident for good: about 20 MB of a 66 MB server with
/// the seed-config model. Collecting once after each load gives it back.
#[allow(unsafe_code)]
mod allocator {
    // The `mimalloc` crate links mimalloc but exposes no collection; its `-sys`
    // crate's `extended` feature would, at the price of another dependency. The
    // declaration is mimalloc's own (`void mi_collect(bool force)`, mimalloc.h),
    // and the function has no preconditions: any thread may call it at any time.
    unsafe extern "C" {
        safe fn mi_collect(force: bool);
    }

    /// Frees the calling thread's empty pages and purges every freed page of the
    /// process now rather than after mimalloc's delay.
    pub fn give_back_freed_memory() {
        mi_collect(true);
    }
}

#[derive(Parser)]
#[command(
    name = "predict-buy",
    version,
    about = "Train, serve, release and deploy the insurance-buying prediction model"
)]
struct Cli {
    /// More logging (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthetic data in the raw insurance schema, and data files versioned in the registry.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Train a model from a config and write its artifact and report.
    Train(commands::train::TrainArgs),
    /// Score a model on a labelled CSV.
    Evaluate(commands::evaluate::EvaluateArgs),
    /// Predict rows from a CSV or JSON file.
    Predict(commands::predict::PredictArgs),
    /// Serve predictions over HTTP.
    Serve(commands::serve::ServeArgs),
    /// Model artifacts in the registry.
    #[command(subcommand)]
    Model(commands::model::ModelCommand),
    /// Immutable releases in the registry.
    #[command(subcommand)]
    Release(commands::release::ReleaseCommand),
    /// Deploy a release to an environment.
    Deploy(commands::deploy::DeployArgs),
    /// Return an environment to an earlier verified release.
    Rollback(commands::deploy::RollbackArgs),
    /// Deploy a release verified in a lower environment to a higher one.
    Promote(commands::deploy::PromoteArgs),
    /// What runs in an environment.
    Status(commands::deploy::StatusArgs),
    /// The deploy history of an environment.
    History(commands::deploy::HistoryArgs),
    /// Score a release beside the serving one on live requests (start, report, stop).
    #[command(subcommand)]
    Shadow(commands::shadow::ShadowCommand),
    /// How far each server's live inputs and scores have drifted from the training data.
    Drift(commands::drift::DriftArgs),
    /// Housekeeping of the registry itself.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// Everything on one machine: data, training, registry, release, deploy, serve.
    Quickstart(commands::quickstart::QuickstartArgs),
    /// Print the Kubernetes manifests of a release in an environment (no cluster needed).
    Render(commands::render::RenderArgs),
    /// An HTML report of a model or release (curves, calibration, importance), or a
    /// comparison of several on the same rows.
    Report(commands::report::ReportArgs),
}

/// Turns transparent huge pages off for this process, for `train`.
///
/// mimalloc asks for huge pages on its arenas, and with the kernel's usual
/// `defrag=madvise` a fault on such a page may first compact memory to find 2 MB free.
/// Training allocates and frees hundreds of megabytes in a second or two: on the seed
/// config that cost 0.2–0.7 s of system time a run, varying with how fragmented the
/// machine's memory was, against 0.05–0.2 s with ordinary pages, and peak memory was
/// 10% higher (wall 0.88× paired). `predict` is the other way round: it allocates
/// less and once, and ran 1.18× longer without huge pages, so it and the others keep
/// the default. The setting is inherited by child processes, so it is never set by
/// a command that starts servers. A kernel that refuses (`prctl` before Linux 3.15)
/// leaves things as they were.
fn without_huge_pages() {
    let _ = nix::sys::prctl::set_thp_disable(true);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    quiet_on_closed_stdout();
    let result = match cli.command {
        Command::Data(c) => commands::data::run(c),
        Command::Train(a) => {
            without_huge_pages();
            commands::train::run(a)
        }
        Command::Evaluate(a) => commands::evaluate::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Serve(a) => {
            predict_buy_serve::after_each_load(allocator::give_back_freed_memory);
            commands::serve::run(a)
        }
        Command::Model(c) => commands::model::run(c),
        Command::Release(c) => commands::release::run(c),
        Command::Deploy(a) => commands::deploy::run_deploy(a),
        Command::Rollback(a) => commands::deploy::run_rollback(a),
        Command::Promote(a) => commands::deploy::run_promote(a),
        Command::Status(a) => commands::deploy::run_status(a),
        Command::History(a) => commands::deploy::run_history(a),
        Command::Shadow(c) => commands::shadow::run(c),
        Command::Drift(a) => commands::drift::run(a),
        Command::Registry(c) => commands::registry::run(c),
        Command::Quickstart(a) => commands::quickstart::run(a),
        Command::Render(a) => commands::render::run(a),
        Command::Report(a) => commands::report::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        EnvFilter::try_from_env(project::env::LOG).unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var(project::env::LOG_FORMAT).is_ok_and(|v| v == "json");
    // Colour codes only for a person at a terminal: in a file, a pipe or a log
    // collector they are noise that breaks grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Commands write stdout through `project::out`, which turns a closed pipe into a quiet
/// exit. This catches the `println!`s that remain: std panics with "failed printing to
/// stdout" when the reader of `predict-buy … | head` has gone, and that is no bug, so
/// the process ends as ripgrep does (exit 0, nothing printed) instead of with a panic.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout")
            && message.ends_with(&format!("(os error {})", nix::errno::Errno::EPIPE as i32))
        {
            std::process::exit(0);
        }
        default(info);
    }));
}
