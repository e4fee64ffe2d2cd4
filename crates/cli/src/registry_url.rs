//! The `--registry` flag that every registry command flattens in, and opening the
//! registry it names. Which URL wins (flag, environment, `predict-buy.yaml`, default)
//! is decided by [`crate::settings`].

use clap::Args;
use predict_buy_registry::{Error, Registry, RegistryUrl};

use crate::CliError;
use crate::settings::{Runtime, Settings};

/// `--registry URL`, flattened into every command that talks to the registry.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArg {
    /// Registry URL: file://DIR, a directory, or s3://bucket/prefix. Default: env
    /// PREDICT_BUY_REGISTRY, else `registry:` in predict-buy.yaml, else
    /// file://.predict-buy/registry.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

/// The registry URL for this invocation, as [`Settings::registry_url`] resolves it.
pub fn registry_url(flag: Option<&str>) -> Result<RegistryUrl, CliError> {
    Settings::from_process()?.registry_url(flag, None)
}

/// Opens the registry named by [`registry_url`].
pub fn open_registry(flag: Option<&str>) -> Result<Registry, CliError> {
    Ok(Registry::open(&registry_url(flag)?)?)
}

/// A runtime for one command's registry calls.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    crate::settings::runtime(Runtime::Registry)
}

/// The exit code and hint of a registry error; the same as `?` does, for call sites
/// that map errors explicitly.
pub fn registry_error(e: Error) -> CliError {
    e.into()
}
