//! `quickstart`: journeys 1–4 on one machine from nothing — synthetic data, a trained
//! model, a registry with release v0.1.0, a local `nonprod` server following it, and
//! a verified deploy. Each step reuses the command that does it on its own.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use predict_buy_deploy::{Deployer, Identity, Kind, LoadedConfig, Verifier, target_for};
use predict_buy_registry::{Registry, ReleaseTag};

use crate::commands::data::{SynthArgs, synth};
use crate::commands::release::{NewRelease, create_release};
use crate::commands::train::{TrainArgs, train};
use crate::registry_url::registry_error;
use crate::{CliError, Outcome};

const TAG: &str = "v0.1.0";
const ENV: &str = "nonprod";

#[derive(Args)]
pub struct QuickstartArgs {
    /// Folder to work in (created if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Port of the local nonprod server on 127.0.0.1.
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// Synthetic rows to train on.
    #[arg(long, default_value_t = 50_000)]
    pub rows: usize,
    /// Stop the server and exit once the deploy is verified (for scripts and CI),
    /// instead of serving in the foreground until Ctrl-C.
    #[arg(long, visible_alias = "exit")]
    pub no_serve: bool,
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

/// Kills the server if quickstart stops early.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(a: QuickstartArgs) -> Outcome {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    std::env::set_current_dir(&a.dir)
        .with_context(|| format!("cannot enter {}", a.dir.display()))?;
    let here = std::env::current_dir().context("cannot read the current folder")?;

    step(1, "synthetic data");
    if PathBuf::from("data/train.csv").is_file() {
        eprintln!("    data/train.csv exists, kept");
    } else {
        synth(&SynthArgs {
            rows: a.rows,
            seed: 42,
            out: "data".into(),
            test_fraction: 0.2,
        })?;
    }

    step(2, "train (built-in default config)");
    let artifact = PathBuf::from("models/model.pbm");
    if artifact.is_file() {
        eprintln!("    {} exists, kept", artifact.display());
    } else {
        let trained = train(&TrainArgs {
            config: None,
            out: Some(artifact.clone()),
            json: false,
        })?;
        let t = &trained.report.test;
        eprintln!(
            "    {} trees, test ROC AUC {}, accuracy {:.3}",
            trained.report.n_trees,
            t.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
            t.accuracy
        );
    }

    step(3, "project config");
    let config_path = here.join(predict_buy_deploy::CONFIG_FILE);
    if config_path.is_file() {
        eprintln!("    {} exists, used as is", config_path.display());
    } else {
        crate::project::write_atomic(&config_path, project_yaml(a.port).as_bytes())?;
        eprintln!("    wrote {}", config_path.display());
    }
    let config = LoadedConfig::load(&config_path).map_err(super::deploy::deploy_error)?;
    let env = config
        .environment(ENV)
        .map_err(super::deploy::deploy_error)?;
    let url = config
        .registry_url()
        .map_err(super::deploy::deploy_error)?
        .unwrap_or_else(|| predict_buy_registry::RegistryUrl::File {
            root: here.join(".predict-buy/registry"),
        });
    let registry = Arc::new(Registry::open(&url).map_err(registry_error)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    step(4, &format!("push the model and create release {TAG}"));
    let tag = ReleaseTag::parse(TAG).expect("a valid tag");
    let created = rt.block_on(create_release(
        &registry,
        NewRelease {
            tag: tag.clone(),
            model: "models/model.pbm",
            image: None,
            notes: "created by predict-buy quickstart".into(),
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

    let endpoint =
        env.endpoints.first().cloned().ok_or_else(|| {
            CliError::input(anyhow::anyhow!("environment `{ENV}` has no endpoint"))
        })?;
    let addr = format!(
        "{}:{}",
        endpoint.host_str().unwrap_or("127.0.0.1"),
        endpoint.port_or_known_default().unwrap_or(a.port)
    );
    step(5, &format!("start a local {ENV} server on {addr}"));
    if TcpListener::bind(&addr).is_err() {
        return Err(CliError::failed(anyhow::anyhow!("{addr} is already in use"))
            .with_hint("stop what listens there, or run `predict-buy quickstart --port N --dir NEW_FOLDER`"));
    }
    let exe = std::env::current_exe().context("cannot find the predict-buy executable")?;
    let child = Command::new(exe)
        .args(["serve", "--registry", &url.to_string(), "--env", ENV])
        .args(["--addr", &addr, "--poll-interval", "200ms"])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start `predict-buy serve`")?;
    let mut server = Server(Some(child));

    step(6, &format!("deploy {TAG} to {ENV} and verify"));
    let verifier = Verifier::new(env.verify_timeout.unwrap_or(Duration::from_secs(30)))
        .map_err(super::deploy::deploy_error)?;
    let target = target_for(&env).map_err(super::deploy::deploy_error)?;
    let git_root = config
        .config
        .require_git_tag
        .then(|| config.root().to_path_buf());
    let deployer = Deployer::new(registry, env, target, verifier, Identity::current())
        .require_git_tags_in(git_root);
    let report = rt.block_on(async {
        let release = deployer.validate(&tag).await?;
        let plan = deployer.plan(release, Kind::Deploy).await?;
        deployer.execute(&plan).await
    });
    let report = report.map_err(super::deploy::deploy_error)?;
    if !report.is_verified() {
        return Err(CliError::failed(anyhow::anyhow!(
            "{TAG} was deployed but not verified: {}",
            report
                .failure()
                .map_or("unknown reason".into(), |f| f.to_string())
        ))
        .with_hint(format!("see `predict-buy history --env {ENV}`")));
    }
    println!(
        "\n{TAG} is verified on {ENV} in {:.0} ms and serving at {endpoint}",
        report.verify_ms().unwrap_or_default()
    );
    let sample = created
        .record
        .golden
        .first()
        .map(|g| g.input.to_string())
        .unwrap_or_else(|| "{}".into());
    println!(
        "try it:\n  curl -s {endpoint}predict -H 'content-type: application/json' -d '{sample}'"
    );
    println!(
        "then: predict-buy status --env {ENV} · predict-buy history --env {ENV} · docs/operations.md"
    );
    if a.no_serve {
        return Ok(());
    }
    println!("serving in the foreground; Ctrl-C stops it");
    let mut child = server.0.take().expect("the server was started");
    let status = child.wait().context("waiting for the server")?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::failed(anyhow::anyhow!(
            "the server exited with {status}"
        )))
    }
}

fn step(n: u8, what: &str) {
    eprintln!("[{n}/6] {what}");
}
