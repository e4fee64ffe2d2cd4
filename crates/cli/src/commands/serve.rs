//! `predict-buy serve`: the HTTP prediction service, from a model file or following an
//! environment of the registry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Args;
use predict_buy_registry::{EnvName, Registry};
use predict_buy_serve::{AppState, Limits, ModelSource, ReloadOutcome};

use crate::project::env;
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct ServeArgs {
    /// Serve this model artifact (reloaded from the same path on SIGHUP and
    /// `POST /admin/reload`).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["registry", "env"], required_unless_present = "env")]
    pub model: Option<PathBuf>,
    /// Registry to follow with --env. Default: env PREDICT_BUY_REGISTRY, else
    /// file://.predict-buy/registry.
    #[arg(long, value_name = "URL", requires = "env")]
    pub registry: Option<String>,
    /// Follow this environment's desired release in the registry.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// Address to listen on.
    #[arg(long, env = env::SERVE_ADDR, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = env::SERVE_BODY_LIMIT, default_value_t = 1 << 20)]
    pub body_limit: usize,
    /// Most instances in one /predict/batch request (413 beyond).
    #[arg(long, env = env::SERVE_BATCH_LIMIT, default_value_t = 1000)]
    pub batch_limit: usize,
    /// Most prediction requests in flight; more are refused with 503.
    #[arg(long, env = env::SERVE_CONCURRENCY_LIMIT, default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// Longest a request may take, body included (408 beyond): `10s`, `500ms`.
    #[arg(long, env = env::SERVE_TIMEOUT, default_value = "10s", value_parser = crate::settings::parse_duration)]
    pub timeout: Duration,
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
    if a.batch_limit == 0 || a.concurrency_limit == 0 || a.body_limit == 0 {
        return Err(CliError::input(anyhow!(
            "--body-limit, --batch-limit and --concurrency-limit must be at least 1"
        )));
    }
    let limits = Limits {
        body_bytes: a.body_limit,
        batch_instances: a.batch_limit,
        concurrency: a.concurrency_limit,
        request_timeout: a.timeout,
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
        let state = AppState::new(source, limits, admin_token);
        initial_load(&state).await?;
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))
            .map_err(CliError::input)?;
        let local = listener
            .local_addr()
            .context("no local address")
            .map_err(CliError::failed)?;
        eprintln!("predict-buy serve: listening on http://{local}");
        predict_buy_serve::serve(listener, state, a.poll_interval, shutdown_signal())
            .await
            .context("the server failed")
            .map_err(CliError::failed)?;
        eprintln!("predict-buy serve: stopped");
        Ok(())
    })
}

fn source(a: &ServeArgs) -> Result<ModelSource, CliError> {
    if let Some(path) = &a.model {
        return Ok(ModelSource::File(path.clone()));
    }
    let Some(env_name) = &a.env else {
        return Err(CliError::input(anyhow!(
            "pass --model PATH, or --env NAME to follow a registry environment"
        )));
    };
    let env_name = EnvName::parse(env_name).map_err(CliError::input)?;
    // The same resolution as every other command: flag, environment, predict-buy.yaml.
    let url = crate::registry_url::registry_url(a.registry.as_deref())?;
    let registry = Registry::open(&url)
        .map_err(|e| CliError::from(e).context(format!("cannot open the registry {url}")))?;
    Ok(ModelSource::Registry {
        registry: Arc::new(registry),
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
        // The registry may come back or the environment may be fixed by the next
        // deploy; keep polling, not ready meanwhile.
        (ModelSource::Registry { .. }, Err(e)) => {
            eprintln!(
                "predict-buy serve: warning: {}; not ready until a release loads",
                e.chain()
            );
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("predict-buy serve: shutting down, draining requests in flight");
}
