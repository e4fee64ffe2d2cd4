//! Which registry a command talks to, and how registry errors become CLI errors.
//!
//! The URL comes from, in order: the `--registry` flag, the `PREDICT_BUY_REGISTRY`
//! environment variable, the `registry:` key of the `predict-buy.yaml` found in the
//! current folder or above it, and finally [`DEFAULT_REGISTRY_URL`]. A relative
//! `file://` path in `predict-buy.yaml` is relative to the folder holding that file, so
//! every subfolder of a project sees the same registry; flags, the environment and the
//! default are relative to the current folder.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use predict_buy_registry::{DEFAULT_REGISTRY_URL, Error, Registry, RegistryUrl};

use crate::CliError;
use crate::project::env;

/// The project config file, looked up from the current folder upwards.
pub const PROJECT_FILE: &str = "predict-buy.yaml";

/// `--registry URL`, flattened into every command that talks to the registry.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArg {
    /// Registry URL: file://DIR, a directory, or s3://bucket/prefix. Default: env
    /// PREDICT_BUY_REGISTRY, else `registry:` in predict-buy.yaml, else
    /// file://.predict-buy/registry.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
}

/// The registry URL for this invocation; see the module docs for the order.
pub fn registry_url(flag: Option<&str>) -> Result<RegistryUrl, CliError> {
    let env_value = std::env::var(env::REGISTRY).ok();
    let cwd = std::env::current_dir()
        .context("cannot read the current folder")
        .map_err(CliError::failed)?;
    resolve(flag, env_value.as_deref(), &cwd)
}

/// Opens the registry named by [`registry_url`].
pub fn open_registry(flag: Option<&str>) -> Result<Registry, CliError> {
    let url = registry_url(flag)?;
    Registry::open(&url).map_err(registry_error)
}

/// A runtime for one command's registry calls.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::failed)
}

/// Maps a registry error to the CLI's exit code (2 for the caller's input, 1 for a
/// failed operation) and adds the obvious next step as a hint.
pub fn registry_error(e: Error) -> CliError {
    let hint = match &e {
        Error::UnknownRelease { .. } => {
            Some("run `predict-buy release list` to see releases".to_string())
        }
        Error::UnknownDigest { .. } | Error::AmbiguousDigest { .. } => {
            Some("run `predict-buy model list` to see stored artifacts".to_string())
        }
        Error::InvalidUrl { .. } => Some(format!(
            "set the registry with --registry, {} or `registry:` in {PROJECT_FILE}",
            env::REGISTRY
        )),
        Error::Corrupt { .. } => Some(
            "run `predict-buy model verify`; pushing the original file again repairs the object"
                .to_string(),
        ),
        Error::Store { .. } | Error::Open { .. } => Some(
            "check that the registry is reachable and the URL is right (--registry, PREDICT_BUY_REGISTRY or predict-buy.yaml)"
                .to_string(),
        ),
        _ => None,
    };
    let code = u8::try_from(e.exit_code()).unwrap_or(1);
    let mut err = if code == 2 {
        CliError::input(e)
    } else {
        CliError::failed(e)
    };
    if let Some(h) = hint {
        err = err.with_hint(h);
    }
    err
}

/// The layering itself, with the environment and current folder passed in.
fn resolve(
    flag: Option<&str>,
    env_value: Option<&str>,
    cwd: &Path,
) -> Result<RegistryUrl, CliError> {
    let parse = |text: &str, source: &str| {
        RegistryUrl::parse(text)
            .map_err(registry_error)
            .map_err(|e| e.context(format!("registry URL from {source}")))
    };
    if let Some(flag) = flag {
        return parse(flag, "--registry");
    }
    if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
        return parse(value, env::REGISTRY);
    }
    if let Some(config) = find_project_file(cwd)
        && let Some(text) = read_registry_key(&config)?
    {
        let url = parse(&text, &config.display().to_string())?;
        return Ok(anchor(url, config.parent().unwrap_or(cwd)));
    }
    Ok(RegistryUrl::parse(DEFAULT_REGISTRY_URL).expect("the default registry URL parses"))
}

/// `predict-buy.yaml` in `start` or the nearest folder above it.
pub fn find_project_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|p| p.is_file())
}

/// Just the `registry` key; the rest of the project config belongs to other commands.
fn read_registry_key(path: &Path) -> Result<Option<String>, CliError> {
    #[derive(serde::Deserialize)]
    struct OnlyRegistry {
        registry: Option<String>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(CliError::input)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parsed: OnlyRegistry = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not valid", path.display()))
        .map_err(CliError::input)?;
    Ok(parsed.registry)
}

/// Makes a relative `file://` path relative to `dir`.
fn anchor(url: RegistryUrl, dir: &Path) -> RegistryUrl {
    match url {
        RegistryUrl::File { root } if root.is_relative() => RegistryUrl::File {
            root: dir.join(root),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(root: impl Into<PathBuf>) -> RegistryUrl {
        RegistryUrl::File { root: root.into() }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(
            resolve(None, None, &sub).unwrap(),
            file(".predict-buy/registry")
        );
        std::fs::write(
            dir.path().join(PROJECT_FILE),
            "registry: file://shared/reg\nenvironments:\n  nonprod: {target: local}\n",
        )
        .unwrap();
        assert_eq!(
            resolve(None, None, &sub).unwrap(),
            file(dir.path().join("shared/reg"))
        );
        assert_eq!(
            resolve(None, Some("s3://team-models/x"), &sub).unwrap(),
            RegistryUrl::S3 {
                bucket: "team-models".into(),
                prefix: "x".into()
            }
        );
        assert_eq!(
            resolve(Some("/srv/reg"), Some("s3://team-models/x"), &sub).unwrap(),
            file("/srv/reg")
        );
    }

    #[test]
    fn project_file_without_registry_key_falls_back_to_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PROJECT_FILE), "environments: {}\n").unwrap();
        assert_eq!(
            resolve(None, None, dir.path()).unwrap(),
            file(".predict-buy/registry")
        );
    }

    #[test]
    fn bad_urls_are_input_errors_naming_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(Some("http://x"), None, dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(format!("{:#}", err.error).contains("--registry"));
        std::fs::write(dir.path().join(PROJECT_FILE), "registry: gs://bucket\n").unwrap();
        let err = resolve(None, None, dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = format!("{:#}", err.error);
        assert!(msg.contains(PROJECT_FILE) && msg.contains("gs://"), "{msg}");
        std::fs::write(dir.path().join(PROJECT_FILE), "registry: [1, 2\n").unwrap();
        let err = resolve(None, None, dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
