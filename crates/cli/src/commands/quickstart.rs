//! `quickstart`: journeys 1–4 on one machine from nothing — synthetic data, a trained
//! model, a registry with release v0.1.0, a local `nonprod` server following it, and
//! a verified deploy. Each step reuses the command that does it on its own.
//!
//! The server is a child process. SIGINT or SIGTERM sent to quickstart (Ctrl-C, `kill`,
//! a process supervisor) stops that child before quickstart exits, whatever step it is
//! in, so no orphan keeps the port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use predict_buy_deploy::{CONFIG_FILE, Deployer, Kind, LoadedConfig, Verifier, target_for};
use predict_buy_registry::{Registry, ReleaseTag};
use serde::Serialize;

use crate::commands::data::{SynthArgs, synth};
use crate::commands::release::{NewRelease, create_release};
use crate::commands::train::{TrainArgs, train};
use crate::error::{Code, IoError};
use crate::project::{out_json, outln, write_atomic};
use crate::settings::{self, Settings};
use crate::{CliError, Outcome};

const TAG: &str = "v0.1.0";
const ENV: &str = "nonprod";
const DEFAULT_PORT: u16 = 8081;
/// How long the server may take to drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct QuickstartArgs {
    /// Folder to work in (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Port of the local nonprod server on 127.0.0.1 (default: the one in the folder's
    /// predict-buy.yaml, else 8081).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Synthetic rows to train on.
    #[arg(long, default_value_t = 50_000)]
    pub rows: usize,
    /// Stop the server and exit once the deploy is verified (for scripts and CI),
    /// instead of serving in the foreground until Ctrl-C.
    #[arg(long, visible_alias = "exit")]
    pub no_serve: bool,
    /// Print a summary as one JSON document on stdout (once the deploy is verified).
    #[arg(long)]
    pub json: bool,
}

/// The config quickstart writes when the folder has none.
fn project_yaml(port: u16) -> String {
    format!(
        "# Written by `predict-buy quickstart`; see docs/operations.md.\n\
         registry: file://.predict-buy/registry\n\
         # Releases here are not git tags (the folder may not even be a git repository).\n\
         # In a real project leave this out: deploys then require the release's git tag.\n\
         require_git_tag: false\n\
         environments:\n  \
           {ENV}:\n    \
             branch: develop\n    \
             target: local\n    \
             endpoints: [http://127.0.0.1:{port}]\n    \
             verify_timeout: 30s\n"
    )
}

/// What each step found or did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Step {
    Created,
    Kept,
    Updated,
}

/// What `quickstart --json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    release: &'static str,
    env: &'static str,
    registry: String,
    endpoint: String,
    artifact: PathBuf,
    model_digest: String,
    verify_ms: f64,
    /// Whether the server is still running (false with --no-serve).
    serving: bool,
    data: Step,
    model: Step,
    config: Step,
    release_record: Step,
}

/// The server child, shared by the steps that start it and the signal handler that
/// stops it. Once closed, no server may start: a signal that arrives while the
/// server is being spawned still finds it.
#[derive(Clone, Default)]
struct ServerSlot(Arc<Mutex<SlotState>>);

#[derive(Default)]
struct SlotState {
    child: Option<tokio::process::Child>,
    closed: bool,
}

impl ServerSlot {
    fn start(&self, command: &mut tokio::process::Command) -> Result<(), CliError> {
        let mut state = self.0.lock().expect("server slot lock");
        if state.closed {
            return Err(CliError::failed(anyhow::anyhow!(
                "quickstart is stopping; the server was not started"
            )));
        }
        let child = command.spawn().map_err(|source| IoError::Spawn {
            what: "`predict-buy serve`".into(),
            source,
        })?;
        state.child = Some(child);
        Ok(())
    }

    /// Closes the slot and hands out the server, if one runs.
    fn close(&self) -> Option<tokio::process::Child> {
        let mut state = self.0.lock().expect("server slot lock");
        state.closed = true;
        state.child.take()
    }
}

/// Asks the server to drain and stop (SIGTERM, as a supervisor would), and kills it if
/// it has not stopped within [`STOP_GRACE`].
async fn stop(mut child: tokio::process::Child) -> Option<ExitStatus> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Some(id) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = kill(Pid::from_raw(id), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// SIGINT and SIGTERM, listened for from the start so the default action (dying
/// without stopping the server) never runs.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> Result<Self, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind| {
            signal(kind).map_err(|e| {
                CliError::failed(anyhow::Error::new(e).context("cannot listen for signals"))
            })
        };
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
        })
    }

    /// The next signal's name and number.
    async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            _ = self.int.recv() => ("SIGINT", nix::sys::signal::Signal::SIGINT as i32),
            _ = self.term.recv() => ("SIGTERM", nix::sys::signal::Signal::SIGTERM as i32),
        }
    }
}

fn interrupted((name, number): (&'static str, i32), stopped: bool) -> CliError {
    let server = if stopped {
        "; the server was stopped"
    } else {
        ""
    };
    CliError {
        error: anyhow::anyhow!("quickstart stopped by {name}{server}"),
        code: Code::Signal(number),
        hint: None,
    }
}

pub fn run(a: QuickstartArgs) -> Outcome {
    std::fs::create_dir_all(&a.dir).map_err(IoError::write(&a.dir))?;
    std::env::set_current_dir(&a.dir).map_err(IoError::read(&a.dir))?;
    let settings = Settings::from_process()?;
    let rt = settings::runtime(settings::Runtime::Deploy)?;
    let slot = ServerSlot::default();
    let mut signals = rt.block_on(async { Signals::listen() })?;
    let result = rt.block_on(async {
        let steps = {
            let slot = slot.clone();
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || prepare(&a, &settings, &slot, &handle))
        };
        let outcome = tokio::select! {
            joined = steps => match joined {
                Ok(Ok(ready)) => finish(ready, &slot, &mut signals).await,
                Ok(Err(e)) => Err(e),
                Err(e) => Err(CliError::failed(anyhow::anyhow!("quickstart failed: {e}"))),
            },
            signal = signals.recv() => {
                let stopped = match slot.close() {
                    Some(child) => stop(child).await.is_some(),
                    None => false,
                };
                return Err(interrupted(signal, stopped));
            }
        };
        // Whatever went wrong, no server outlives quickstart.
        if let Some(child) = slot.close() {
            stop(child).await;
        }
        outcome
    });
    // A signal may leave a step running on a blocking thread (training, say); it is
    // abandoned rather than awaited.
    rt.shutdown_background();
    result
}

/// What [`prepare`] hands to [`finish`].
struct Ready {
    summary: Summary,
    addr: String,
    sample: String,
    json: bool,
}

/// Steps 1–6, on a blocking thread; async parts run on `rt`.
fn prepare(
    a: &QuickstartArgs,
    settings: &Settings,
    slot: &ServerSlot,
    rt: &tokio::runtime::Handle,
) -> Result<Ready, CliError> {
    let here = settings.cwd().to_path_buf();

    step(1, "synthetic data");
    let data = if Path::new("data/train.csv").is_file() {
        eprintln!("    data/train.csv exists, kept");
        Step::Kept
    } else {
        let written = synth(&SynthArgs {
            rows: a.rows,
            seed: 42,
            out: "data".into(),
            test_fraction: 0.2,
            json: false,
        })?;
        eprintln!(
            "    wrote {} rows to {} and {} to {}",
            written.train.rows,
            written.train.path.display(),
            written.test.rows,
            written.test.path.display()
        );
        Step::Created
    };

    step(2, "train (built-in default config)");
    let artifact = PathBuf::from("models/model.pbm");
    let model = if artifact.is_file() {
        eprintln!("    {} exists, kept", artifact.display());
        Step::Kept
    } else {
        let trained = train(&TrainArgs {
            config: None,
            out: Some(artifact.clone()),
            json: false,
            registry: Default::default(),
        })?;
        let t = &trained.report.test;
        eprintln!(
            "    {} trees, test ROC AUC {}, accuracy {:.3}",
            trained.report.n_trees,
            t.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
            t.accuracy
        );
        Step::Created
    };

    step(3, "project config");
    let config_path = here.join(CONFIG_FILE);
    let (config, config_step) = project_config(&config_path, a.port)?;
    let env = settings.environment(&config, Some(ENV))?;
    let url = settings.registry_url_in(None, Some(&config))?;
    let registry = Arc::new(Registry::open(&url)?);

    step(4, &format!("push the model and create release {TAG}"));
    let tag = ReleaseTag::parse(TAG).expect("a valid tag");
    // A release names the data its model learned from, so that data goes first: it is
    // what makes `release reproduce v0.1.0` possible.
    rt.block_on(crate::commands::data::push_files(
        &registry,
        &[
            PathBuf::from("data/train.csv"),
            PathBuf::from("data/test.csv"),
        ],
    ))?;
    let created = rt.block_on(create_release(
        &registry,
        NewRelease {
            tag: tag.clone(),
            model: "models/model.pbm",
            image: None,
            notes: "created by predict-buy quickstart".into(),
            allow_unversioned_data: false,
        },
    ))?;
    eprintln!(
        "    release {TAG}: model {} with {} golden predictions{}",
        created.record.model_digest.short(),
        created.record.golden.len(),
        if created.created {
            ""
        } else {
            " (already there)"
        }
    );

    let endpoint = env.endpoints.first().cloned().ok_or_else(|| {
        CliError::usage(format!(
            "environment `{ENV}` in {} has no endpoint",
            config.path.display()
        ))
    })?;
    let addr = format!(
        "{}:{}",
        endpoint.host_str().unwrap_or("127.0.0.1"),
        endpoint.port_or_known_default().unwrap_or(DEFAULT_PORT)
    );
    step(5, &format!("start a local {ENV} server on {addr}"));
    if TcpListener::bind(&addr).is_err() {
        return Err(
            CliError::failed(anyhow::anyhow!("{addr} is already in use"))
                .with_hint("stop what listens there, or run `predict-buy quickstart --port N`"),
        );
    }
    let exe = std::env::current_exe().map_err(|source| IoError::Spawn {
        what: "`predict-buy serve` (cannot find the predict-buy executable)".into(),
        source,
    })?;
    let mut serve = tokio::process::Command::new(exe);
    serve
        .args(["serve", "--registry", &url.to_string(), "--env", ENV])
        .args(["--addr", &addr, "--poll-interval", "200ms"])
        .stdin(std::process::Stdio::null())
        // The server's lines are logs: stdout stays for quickstart's own output.
        .stdout(std::io::stderr())
        // Should quickstart itself be killed outright, the server goes with it.
        .kill_on_drop(true);
    {
        let _guard = rt.enter();
        slot.start(&mut serve)?;
    }

    step(6, &format!("deploy {TAG} to {ENV} and verify"));
    let verifier = Verifier::new(settings.verify_timeout(None, &env)?)?
        .with_admin_token(settings.admin_token(None)?);
    let target = target_for(&env)?;
    let git_root = config
        .config
        .require_git_tag
        .then(|| config.root().to_path_buf());
    let deployer = Deployer::new(registry, env, target, verifier, settings.identity())
        .require_git_tags_in(git_root);
    let report = rt.block_on(async {
        let release = deployer.validate(&tag).await?;
        let plan = deployer.plan(release, Kind::Deploy).await?;
        deployer.execute(&plan).await
    })?;
    if !report.is_verified() {
        return Err(CliError::failed(anyhow::anyhow!(
            "{TAG} was deployed but not verified: {}",
            report
                .failure()
                .map_or("unknown reason".into(), |f| f.to_string())
        ))
        .with_hint(format!("see `predict-buy history --env {ENV}`")));
    }
    let sample = created
        .record
        .golden
        .first()
        .map(|g| g.input.to_string())
        .unwrap_or_else(|| "{}".into());
    Ok(Ready {
        summary: Summary {
            release: TAG,
            env: ENV,
            registry: url.to_string(),
            endpoint: endpoint.to_string(),
            artifact: here.join(&artifact),
            model_digest: created.record.model_digest.to_string(),
            verify_ms: report.verify_ms().unwrap_or_default(),
            serving: !a.no_serve,
            data,
            model,
            config: config_step,
            release_record: if created.created {
                Step::Created
            } else {
                Step::Kept
            },
        },
        addr,
        sample,
        json: a.json,
    })
}

/// The folder's `predict-buy.yaml`: written when missing; when `--port` differs from
/// its endpoint, rewritten if quickstart wrote it, refused if someone else did (their
/// edits are not ours to overwrite).
fn project_config(path: &Path, port: Option<u16>) -> Result<(LoadedConfig, Step), CliError> {
    if !path.is_file() {
        write_atomic(path, project_yaml(port.unwrap_or(DEFAULT_PORT)).as_bytes())?;
        eprintln!("    wrote {}", path.display());
        return Ok((LoadedConfig::load(path)?, Step::Created));
    }
    let config = LoadedConfig::load(path)?;
    let current = config
        .environment(ENV)?
        .endpoints
        .first()
        .and_then(|e| e.port_or_known_default());
    let Some(port) = port.filter(|p| Some(*p) != current) else {
        eprintln!("    {} exists, used as is", path.display());
        return Ok((config, Step::Kept));
    };
    let text = std::fs::read_to_string(path).map_err(IoError::read(path))?;
    let ours = current.is_some_and(|c| text == project_yaml(c));
    if !ours {
        return Err(CliError::usage(format!(
            "--port {port}: {} was not written by quickstart (or was edited), and its `{ENV}` endpoint uses port {}",
            path.display(),
            current.map_or("none".into(), |c| c.to_string())
        ))
        .with_hint(format!(
            "change environments.{ENV}.endpoints in {}, or run quickstart without --port, or in another --dir",
            path.display()
        )));
    }
    write_atomic(path, project_yaml(port).as_bytes())?;
    eprintln!(
        "    {} now puts {ENV} on port {port} (was {})",
        path.display(),
        current.map_or("none".into(), |c| c.to_string())
    );
    Ok((LoadedConfig::load(path)?, Step::Updated))
}

/// Prints the outcome, then stops the server (`--no-serve`) or serves until the
/// server exits or a signal asks quickstart to stop.
async fn finish(ready: Ready, slot: &ServerSlot, signals: &mut Signals) -> Outcome {
    let Ready {
        mut summary,
        addr,
        sample,
        json,
    } = ready;
    let endpoint = summary.endpoint.clone();
    let serving = summary.serving;
    if !serving {
        if let Some(child) = slot.close() {
            stop(child).await;
        }
        summary.serving = false;
    }
    if json {
        out_json(&summary)?;
    } else {
        outln!(
            "\n{TAG} is verified on {ENV} in {:.0} ms at {endpoint}",
            summary.verify_ms
        )?;
        if serving {
            outln!(
                "try it:\n  curl -s {endpoint}predict -H 'content-type: application/json' -d '{sample}'"
            )?;
        } else {
            outln!(
                "the server is stopped (--no-serve); serve it again with:\n  predict-buy serve --registry {} --env {ENV} --addr {addr}",
                summary.registry
            )?;
        }
        outln!(
            "then: predict-buy status --env {ENV} · predict-buy history --env {ENV} · docs/operations.md"
        )?;
    }
    if !serving {
        return Ok(());
    }
    eprintln!("serving in the foreground; Ctrl-C stops it");
    let Some(mut child) = slot.close() else {
        return Err(CliError::failed(anyhow::anyhow!("the server is gone")));
    };
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(CliError::failed(anyhow::anyhow!("the server exited with {s}"))),
            Err(e) => Err(CliError::failed(anyhow::Error::new(e).context("cannot wait for the server"))),
        },
        signal = signals.recv() => {
            let stopped = stop(child).await.is_some();
            Err(interrupted(signal, stopped))
        }
    }
}

fn step(n: u8, what: &str) {
    eprintln!("[{n}/6] {what}");
}
