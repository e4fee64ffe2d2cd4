//! `predict-buy serve`: the HTTP prediction service, from a model file, following an
//! environment of the registry, or pinned to one release (`--release`, as a pod runs).
//!
//! Once it listens it says where, so supervisors and tests can start it on port 0: the
//! stderr line `predict-buy serve: listening on http://ADDR` (stable; scripts may match
//! it) and, with `--addr-file PATH`, the bound `IP:PORT` written atomically to PATH.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args;
use predict_buy_registry::{Digest, EnvName, Registry, ReleaseTag};
use predict_buy_serve::{AppState, Limits, ModelSource, ReloadOutcome};

use crate::project::env;
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct ServeArgs {
    /// Serve this model artifact (reloaded from the same path on SIGHUP and
    /// `POST /admin/reload`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["registry", "env", "release"], required_unless_present_any = ["env", "release"])]
    pub model: Option<PathBuf>,
    /// Registry of --env or --release. Default: env PREDICT_BUY_REGISTRY, else
    /// `registry:` in predict-buy.yaml, else file://.predict-buy/registry.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Follow this environment's desired release in the registry. With --release, the
    /// release stays pinned and only the environment's candidate (a shadow or a
    /// canary) is followed, as a Kubernetes pod does.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Serve this one release for the life of the process (what a Kubernetes pod
    /// runs): pulled from the registry at start, not ready before, never changed.
    #[arg(long, value_name = "TAG")]
    pub release: Option<String>,
    /// With --release: refuse to serve unless the release's model has this digest
    /// (`sha256:…`), as the pod template names it.
    #[arg(long, value_name = "DIGEST", requires = "release")]
    pub model_digest: Option<String>,
    /// Address to listen on. Port 0 picks a free port; the one bound is reported on
    /// stderr as `predict-buy serve: listening on http://IP:PORT` and in --addr-file.
    #[arg(long, env = env::SERVE_ADDR, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Once listening, write the bound address (`IP:PORT` and a newline) to this file,
    /// atomically (a reader sees no file or the whole line). Removed on a clean stop.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = env::SERVE_BODY_LIMIT, default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Most instances in one /predict/batch request (422 beyond).
    #[arg(long, env = env::SERVE_BATCH_LIMIT, default_value_t = 1000)]
    pub batch_limit: usize,
    /// Most prediction requests in flight; more are refused with 503.
    #[arg(long, env = env::SERVE_CONCURRENCY_LIMIT, default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// Longest a request may take, body included (408 beyond): `10s`, `500ms`.
    #[arg(long, env = env::SERVE_TIMEOUT, default_value = "10s", value_parser = crate::settings::parse_duration)]
    pub timeout: Duration,
    /// Most connections open at once; at the cap the server stops accepting until one
    /// closes. Default: what the open-file limit leaves room for, at most 10,000.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// On SIGTERM/SIGINT, keep answering this long, with `/readyz` 503 and
    /// `Connection: close`, so a load balancer takes the instance out before it stops:
    /// `5s`, `0s`.
    #[arg(long, default_value = "5s", value_parser = parse_drain)]
    pub drain: Duration,
    /// The sliding window `/drift` and the drift metrics cover: `1h`, `10m`. It moves
    /// in sixtieths of itself. `off` stops counting.
    #[arg(long, default_value = "1h", value_parser = parse_drift_window)]
    pub drift_window: Duration,
    /// How often to check the environment for a new release: `1s`, `250ms`.
    #[arg(long, env = env::SERVE_POLL_INTERVAL, default_value = "1s", value_parser = crate::settings::parse_duration)]
    pub poll_interval: Duration,
    /// Worker threads (default: one per core).
    #[arg(long, env = env::SERVE_WORKERS)]
    pub workers: Option<usize>,
    /// File holding the bearer token for /admin/reload (or set PREDICT_BUY_ADMIN_TOKEN).
    /// Without a token the admin endpoints are off.
    #[arg(long, env = env::ADMIN_TOKEN_FILE, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Outcome {
    let source = source(&a)?;
    let admin_token =
        crate::settings::Settings::from_process()?.admin_token(a.admin_token_file.as_deref())?;
    if a.batch_limit == 0
        || a.concurrency_limit == 0
        || a.body_limit == 0
        || a.max_connections == Some(0)
    {
        return Err(CliError::input(anyhow!(
            "--body-limit, --batch-limit, --concurrency-limit and --max-connections must be at least 1"
        )));
    }
    let limits = Limits {
        body_bytes: a.body_limit,
        batch_instances: a.batch_limit,
        concurrency: a.concurrency_limit,
        request_timeout: a.timeout,
        max_connections: a
            .max_connections
            .unwrap_or_else(predict_buy_serve::default_max_connections),
        drain: a.drain,
        drift_window: a.drift_window,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.workers {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::failed)?;
    runtime.block_on(async move {
        // Handlers go in before anything is announced: a supervisor that sends SIGTERM
        // as soon as it reads the address must get a drain, not the default action.
        let signal = predict_buy_serve::shutdown_signal()
            .context("cannot install the SIGTERM/SIGINT handlers")
            .map_err(CliError::failed)?;
        let drain = a.drain;
        let shutdown = async move {
            let name = signal.await;
            // The first part of the line is stable: supervisors and tests match it.
            eprintln!(
                "predict-buy serve: {name}: shutting down, draining requests in flight \
                 (/readyz answers 503 for {drain:?} first)"
            );
        };
        let state = AppState::new(source, limits, admin_token);
        if let (Some(env), Some(_)) = (&a.env, &a.release) {
            state.follow_candidates_of(EnvName::parse(env).map_err(CliError::input)?);
        }
        initial_load(&state).await?;
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))
            .map_err(CliError::input)?;
        let local = listener
            .local_addr()
            .context("no local address")
            .map_err(CliError::failed)?;
        if let Some(path) = &a.addr_file {
            crate::project::write_atomic(path, format!("{local}\n").as_bytes()).map_err(|e| {
                e.context(format!("cannot write the address file {}", path.display()))
            })?;
        }
        eprintln!("predict-buy serve: listening on http://{local}");
        predict_buy_serve::serve(listener, state, a.poll_interval, shutdown)
            .await
            .context("the server failed")
            .map_err(CliError::failed)?;
        // A stale file would send the next reader to a port nobody listens on.
        if let Some(path) = &a.addr_file {
            let _ = std::fs::remove_file(path);
        }
        eprintln!("predict-buy serve: stopped");
        Ok(())
    })
}

/// A duration as every other flag takes it, or zero: no drain is a valid choice (a
/// server with no load balancer in front), where a zero timeout is not.
fn parse_drain(text: &str) -> Result<Duration, String> {
    let zero = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse::<f64>()
        .is_ok_and(|v| v == 0.0);
    if zero {
        return Ok(Duration::ZERO);
    }
    crate::settings::parse_duration(text)
}

/// A duration, or `off` (zero: no drift counting).
fn parse_drift_window(text: &str) -> Result<Duration, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    crate::settings::parse_duration(text)
}

fn source(a: &ServeArgs) -> Result<ModelSource, CliError> {
    if let Some(path) = &a.model {
        return Ok(ModelSource::File(path.clone()));
    }
    // The same resolution as every other command: flag, environment, predict-buy.yaml.
    let open = || -> Result<Arc<Registry>, CliError> {
        let url = crate::registry_url::registry_url(a.registry.as_deref())?;
        let registry = Registry::open(&url)
            .map_err(|e| CliError::from(e).context(format!("cannot open the registry {url}")))?;
        Ok(Arc::new(registry))
    };
    if let Some(tag) = &a.release {
        let tag = ReleaseTag::parse(tag).map_err(CliError::input)?;
        let expected_digest = a
            .model_digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| CliError::input(e).context("--model-digest"))?;
        return Ok(ModelSource::Release {
            registry: open()?,
            tag,
            expected_digest,
        });
    }
    let Some(env_name) = &a.env else {
        return Err(CliError::input(anyhow!(
            "pass --model PATH, --env NAME to follow a registry environment, or --release TAG"
        )));
    };
    let env_name = EnvName::parse(env_name).map_err(CliError::input)?;
    Ok(ModelSource::Registry {
        registry: open()?,
        env: env_name,
    })
}

/// A model file must load before the server listens; an environment may have no
/// release yet (the server then reports not ready and keeps polling).
async fn initial_load(state: &AppState) -> Result<(), CliError> {
    match (state.source(), state.reload(true).await) {
        (_, Ok(ReloadOutcome::NoRelease)) => {
            eprintln!(
                "predict-buy serve: {} has no release yet; not ready until it has one",
                state.source().describe()
            );
            Ok(())
        }
        (_, Ok(_)) => {
            if let Some(m) = state.current() {
                eprintln!(
                    "predict-buy serve: serving model {} ({})",
                    m.version, m.digest
                );
            }
            Ok(())
        }
        (ModelSource::File(path), Err(e)) => {
            Err(CliError::from(e).context(format!("cannot serve {}", path.display())))
        }
        // A pinned release whose model is refused will never serve: exit, so the pod
        // shows the reason (a crash loop) instead of staying unready in silence.
        (ModelSource::Release { tag, .. }, Err(e)) if e.is_refusal() => {
            Err(CliError::from(e).context(format!("cannot serve release {tag}")))
        }
        // The registry may come back or the environment may be fixed by the next
        // deploy; keep polling, not ready meanwhile.
        (ModelSource::Registry { .. } | ModelSource::Release { .. }, Err(e)) => {
            eprintln!(
                "predict-buy serve: warning: {}; not ready until a release loads",
                e.chain()
            );
            Ok(())
        }
    }
}
