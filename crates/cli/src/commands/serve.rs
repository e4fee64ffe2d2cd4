//! `predict-buy serve`: the HTTP prediction service, from a model file or following an
//! environment of the registry.
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
    /// Most instances in one /predict/batch request (413 beyond).
    #[arg(long, env = env::SERVE_BATCH_LIMIT, default_value_t = 1000)]
    pub batch_limit: usize,
    /// Most prediction requests in flight; more are refused with 503.
    #[arg(long, env = env::SERVE_CONCURRENCY_LIMIT, default_value_t = 1024)]
    pub concurrency_limit: usize,
    /// Longest a request may take, body included (408 beyond): `10s`, `500ms`.
    #[arg(long, env = env::SERVE_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How often to check the environment for a new release: `1s`, `250ms`.
    #[arg(long, env = env::SERVE_POLL_INTERVAL, default_value = "1s", value_parser = parse_duration)]
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
    let admin_token = admin_token(a.admin_token_file.as_deref())?;
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
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Handlers go in before anything is announced: a supervisor that sends SIGTERM
        // as soon as it reads the address must get a drain, not the default action.
        let shutdown = shutdown_signal().context("cannot install the SIGTERM/SIGINT handlers")?;
        let state = AppState::new(source, limits, admin_token);
        initial_load(&state).await?;
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))
            .map_err(CliError::input)?;
        let local = listener.local_addr().context("no local address")?;
        if let Some(path) = &a.addr_file {
            crate::project::write_atomic(path, format!("{local}\n").as_bytes())
                .with_context(|| format!("cannot write the address file {}", path.display()))?;
        }
        eprintln!("predict-buy serve: listening on http://{local}");
        predict_buy_serve::serve(listener, state, a.poll_interval, shutdown)
            .await
            .context("the server failed")?;
        // A stale file would send the next reader to a port nobody listens on.
        if let Some(path) = &a.addr_file {
            let _ = std::fs::remove_file(path);
        }
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
        .map_err(|e| CliError::input(e).context(format!("cannot open the registry {url}")))?;
    Ok(ModelSource::Registry {
        registry: Arc::new(registry),
        env: env_name,
    })
}

/// The token from PREDICT_BUY_ADMIN_TOKEN, else from the token file.
fn admin_token(file: Option<&std::path::Path>) -> Result<Option<String>, CliError> {
    if let Ok(token) = std::env::var(env::ADMIN_TOKEN)
        && !token.trim().is_empty()
    {
        return Ok(Some(token.trim().to_string()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))
        .map_err(CliError::input)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::input(anyhow!(
            "the admin token file {} is empty",
            path.display()
        )));
    }
    Ok(Some(token.to_string()))
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
        (ModelSource::File(path), Err(e)) => Err(CliError::input(e)
            .context(format!("cannot serve {}", path.display()))
            .with_hint("check the path, or train one with `predict-buy train`")),
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

/// Installs the SIGTERM and SIGINT handlers now and returns the future that completes
/// on the first of them. Installing them lazily, when the future is first polled,
/// would leave a window after start in which SIGTERM kills the process undrained.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("predict-buy serve: {name}: shutting down, draining requests in flight");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("predict-buy serve: Ctrl-C: shutting down, draining requests in flight");
    })
}

/// `250ms`, `10s`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s or m"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!("`{text}` is out of range (0 < duration ≤ 24h)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
