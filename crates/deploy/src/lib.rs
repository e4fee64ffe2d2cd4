//! Deploys for predict-buy: the project config (`predict-buy.yaml`), release
//! validation (semver tag, git tag, registry release), environment policy, targets,
//! verification against golden predictions, and automatic rollback — the state
//! machine that replaces the original workflow's bash, `skaffold deploy` and
//! `kubectl get pods`.
//!
//! **What it must never do:** serve predictions or depend on the server crate. It
//! talks to running instances only over HTTP, and to the world's state only through
//! the registry, which stays the single source of truth for what runs where.
//!
//! ```no_run
//! use std::sync::Arc;
//! use predict_buy_deploy::{Deployer, Identity, Kind, LoadedConfig, Verifier, target_for};
//! use predict_buy_registry::{Registry, ReleaseTag};
//!
//! # async fn demo() -> Result<(), predict_buy_deploy::Error> {
//! let config = LoadedConfig::discover(&std::env::current_dir().unwrap())?;
//! let env = config.environment("nonprod")?;
//! let registry = Arc::new(Registry::open(&config.registry_url()?.expect("configured"))?);
//! let target = target_for(&env)?;
//! let deployer = Deployer::new(registry, env, target, Verifier::new(predict_buy_deploy::verify::DEFAULT_TIMEOUT)?, Identity::current());
//! let tag = ReleaseTag::parse("v1.2.0")?;
//! let release = deployer.validate(&tag).await?;
//! deployer.check_policy(&tag).await?;
//! let plan = deployer.plan(release, Kind::Deploy).await?;
//! let report = deployer.execute(&plan).await?;
//! println!("{} in {:?} ms", report.verdict.name(), report.verify_ms());
//! # Ok(())
//! # }
//! ```

pub mod canary;
pub mod config;
mod engine;
mod error;
pub mod git;
pub mod history;
pub mod kubernetes;
pub mod shadow;
mod status;
pub mod target;
pub mod traffic;
pub mod verify;

pub use config::{
    CONFIG_FILE, Environment, EnvironmentConfig, LoadedConfig, ProjectConfig, TargetKind,
};
pub use engine::{
    CanaryOutcome, CanaryPlan, CanaryProgress, CanaryReport, DEFAULT_LEASE_TTL, Deployer, Fallback,
    Identity, Kind, Plan, Progress, Report, Verdict,
};
pub use error::{Error, Result};
/// Endpoint URLs, as the config and targets take them.
pub use reqwest::Url;
pub use status::{Status, status};
pub use target::{EnvTarget, EnvVerifier, LocalTarget, Target, connect, target_for};
pub use verify::{FailureKind, Verified, Verifier, Verify, VerifyFailure};
