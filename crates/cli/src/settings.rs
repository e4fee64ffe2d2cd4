//! Every setting a command needs, resolved in one place.
//!
//! Like uv's settings layer, each value has one documented order of precedence, and
//! commands ask this module instead of reading the environment or files themselves:
//!
//! - **registry URL**: `--registry` > `PREDICT_BUY_REGISTRY` > `registry:` of the
//!   project config > [`DEFAULT_REGISTRY_URL`]. A relative `file://` path in the
//!   project config is relative to the folder holding it (so every subfolder of a
//!   project sees one registry); flags, the environment and the default are relative
//!   to the current folder.
//! - **project config**: `--config PATH`, else `predict-buy.yaml` in the current folder
//!   or the nearest one above it, read by the deploy crate's [`LoadedConfig`] (the one
//!   YAML reader and the one walker).
//! - **environment**: `--env`, else the environment following the current git branch.
//! - **durations**: one syntax (`250ms`, `30s`, `2m`, `1h`, `7d`, bare seconds; a
//!   superset of the deploy crate's YAML durations) and one cap (7 days: longer is a
//!   typo, such as `30000` meant as milliseconds). [`parse_duration`] refuses zero,
//!   because every duration it reads is a timeout, a lease or a polling interval, and
//!   zero would mean "fail at once" or "spin"; [`parse_min_age`] takes zero, because
//!   `registry gc --min-age 0s` ("every leftover, now") is a real request.
//! - **admin token**: `PREDICT_BUY_ADMIN_TOKEN` > the token file (`--admin-token-file`,
//!   else `PREDICT_BUY_ADMIN_TOKEN_FILE`).
//! - **actor** (who is recorded in history): `PREDICT_BUY_ACTOR` (so CI can name the
//!   person who started the workflow) > `$USER` > the account name of the uid.
//! - **async runtime**: [`runtime`].
//!
//! Environment variables are read once, into [`Vars`], so the layering is tested with
//! plain values instead of a mutated process environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use predict_buy_deploy::{Environment, Identity, LoadedConfig};
use predict_buy_registry::{DEFAULT_REGISTRY_URL, RegistryUrl};

use crate::CliError;
use crate::project::env;

/// The longest duration any setting takes: a week, so `registry gc --min-age 7d`
/// works; longer is a typo (`30000` meant as ms).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Why a setting cannot be resolved. Every variant is the caller's input except
/// [`SettingsError::CurrentDir`] and [`SettingsError::Runtime`]; `error.rs` decides.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{key} `{value}` {reason}")]
    Duration {
        key: String,
        value: String,
        reason: String,
    },
    #[error("the registry URL from {from} is not valid")]
    RegistryUrl {
        from: String,
        #[source]
        source: Box<predict_buy_registry::Error>,
    },
    #[error("cannot read the admin token file {}", .path.display())]
    AdminTokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin token file {} is empty", .path.display())]
    AdminTokenEmpty { path: PathBuf },
    #[error("cannot read the current folder")]
    CurrentDir(#[source] std::io::Error),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The environment variables settings come from, read once.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub registry: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub actor: Option<String>,
    pub user: Option<String>,
}

impl Vars {
    /// This process's variables; empty values count as unset, as a CI template that
    /// expands to nothing means "not given".
    pub fn from_process() -> Self {
        let get = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Vars {
            registry: get(env::REGISTRY),
            admin_token: get(env::ADMIN_TOKEN),
            admin_token_file: get(env::ADMIN_TOKEN_FILE).map(PathBuf::from),
            actor: get(env::ACTOR),
            user: get("USER"),
        }
    }
}

/// The resolved settings of one invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    cwd: PathBuf,
    vars: Vars,
}

impl Settings {
    /// Settings of this process: its current folder and environment.
    pub fn from_process() -> Result<Self, CliError> {
        let cwd = std::env::current_dir().map_err(SettingsError::CurrentDir)?;
        Ok(Self::new(cwd, Vars::from_process()))
    }

    pub fn new(cwd: PathBuf, vars: Vars) -> Self {
        Settings { cwd, vars }
    }

    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// The project config: `explicit` when given (which must exist), else the one
    /// found from the current folder upwards, else `None`.
    pub fn project(&self, explicit: Option<&Path>) -> Result<Option<LoadedConfig>, CliError> {
        if let Some(path) = explicit {
            return Ok(Some(LoadedConfig::load(&self.cwd.join(path))?));
        }
        match LoadedConfig::discover(&self.cwd) {
            Ok(c) => Ok(Some(c)),
            Err(predict_buy_deploy::Error::ConfigNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The project config, which this command cannot do without.
    pub fn require_project(&self, explicit: Option<&Path>) -> Result<LoadedConfig, CliError> {
        match explicit {
            Some(_) => Ok(self
                .project(explicit)?
                .expect("an explicit config loads or fails")),
            None => Ok(LoadedConfig::discover(&self.cwd)?),
        }
    }

    /// The registry URL; see the module docs for the order. The project config is
    /// read only when neither the flag nor the environment names a registry, so a
    /// broken config does not stand in the way of `--registry`.
    pub fn registry_url(
        &self,
        flag: Option<&str>,
        explicit_config: Option<&Path>,
    ) -> Result<RegistryUrl, CliError> {
        if let Some(url) = self.registry_url_from_flag_or_env(flag)? {
            return Ok(url);
        }
        let project = self.project(explicit_config)?;
        self.registry_url_in(None, project.as_ref())
    }

    /// The registry URL when the project config is already loaded.
    pub fn registry_url_in(
        &self,
        flag: Option<&str>,
        project: Option<&LoadedConfig>,
    ) -> Result<RegistryUrl, CliError> {
        if let Some(url) = self.registry_url_from_flag_or_env(flag)? {
            return Ok(url);
        }
        if let Some(url) = project
            .map(LoadedConfig::registry_url)
            .transpose()?
            .flatten()
        {
            return Ok(url);
        }
        Ok(RegistryUrl::parse(DEFAULT_REGISTRY_URL).expect("the default registry URL parses"))
    }

    fn registry_url_from_flag_or_env(
        &self,
        flag: Option<&str>,
    ) -> Result<Option<RegistryUrl>, CliError> {
        let parse = |text: &str, from: &str| {
            RegistryUrl::parse(text).map_err(|source| SettingsError::RegistryUrl {
                from: from.to_string(),
                source: Box::new(source),
            })
        };
        if let Some(flag) = flag {
            return Ok(Some(parse(flag, "--registry")?));
        }
        if let Some(value) = &self.vars.registry {
            return Ok(Some(parse(value, env::REGISTRY)?));
        }
        Ok(None)
    }

    /// `--env NAME`, else the environment following the project's git branch. Its
    /// `verify_timeout` obeys the same rule as every other duration.
    pub fn environment(
        &self,
        project: &LoadedConfig,
        flag: Option<&str>,
    ) -> Result<Environment, CliError> {
        let env = project.resolve_environment(flag)?;
        if let (Some(t), Some(raw)) = (env.verify_timeout, &env.config.verify_timeout) {
            check_range(t).map_err(|reason| SettingsError::Duration {
                key: format!(
                    "{}: environments.{}.verify_timeout",
                    project.path.display(),
                    env.name
                ),
                value: raw.clone(),
                reason,
            })?;
        }
        Ok(env)
    }

    /// How long verification may take: `--timeout`, else the environment's
    /// `verify_timeout`, else the deploy crate's default.
    pub fn verify_timeout(
        &self,
        flag: Option<&str>,
        env: &Environment,
    ) -> Result<Duration, CliError> {
        match flag {
            Some(v) => duration("--timeout", v),
            None => Ok(env
                .verify_timeout
                .unwrap_or(predict_buy_deploy::verify::DEFAULT_TIMEOUT)),
        }
    }

    /// The bearer token for servers' admin endpoints; see the module docs.
    pub fn admin_token(&self, file_flag: Option<&Path>) -> Result<Option<String>, CliError> {
        if let Some(token) = &self.vars.admin_token {
            return Ok(Some(token.clone()));
        }
        let Some(path) = file_flag.or(self.vars.admin_token_file.as_deref()) else {
            return Ok(None);
        };
        let path = self.cwd.join(path);
        let text =
            std::fs::read_to_string(&path).map_err(|source| SettingsError::AdminTokenFile {
                path: path.clone(),
                source,
            })?;
        match text.trim() {
            "" => Err(SettingsError::AdminTokenEmpty { path }.into()),
            token => Ok(Some(token.to_string())),
        }
    }

    /// Who runs this command, as history and releases record it: a person's name,
    /// not a machine's (the lease holder says which machine and process).
    pub fn actor(&self) -> String {
        self.vars.actor.clone().unwrap_or_else(|| self.account())
    }

    /// The local account: `$USER`, else the name of the uid (containers and CI often
    /// leave `USER` unset), else `uid N` when the uid has no name at all.
    fn account(&self) -> String {
        if let Some(user) = &self.vars.user {
            return user.clone();
        }
        let uid = nix::unistd::getuid();
        match nix::unistd::User::from_uid(uid) {
            Ok(Some(u)) if !u.name.is_empty() => u.name,
            _ => format!("uid {uid}"),
        }
    }

    /// The deploy engine's identity: the actor for history, and for the lease the
    /// account, host and pid of this very process (the one that must release it).
    pub fn identity(&self) -> Identity {
        Identity {
            actor: self.actor(),
            holder: format!("{}@{} (pid {})", self.account(), host(), std::process::id()),
        }
    }
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A timeout, lease or interval: `250ms`, `30s`, `2m`, `1h`, `2d` or a bare number of
/// seconds, with 0 < d ≤ 7 days. Usable as a clap `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_units(text)?;
    check_range(d)?;
    Ok(d)
}

/// The range of [`parse_duration`], also applied to durations the deploy crate read
/// from the project config.
fn check_range(d: Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err("must be more than zero".to_string());
    }
    if d > MAX_DURATION {
        return Err("is longer than 7d".to_string());
    }
    Ok(())
}

/// An age threshold (`registry gc --min-age`): the syntax of [`parse_duration`], and
/// zero is allowed. Usable as a clap `value_parser`.
pub fn parse_min_age(text: &str) -> Result<Duration, String> {
    parse_units(text)
}

/// The one duration syntax, capped at [`MAX_DURATION`].
fn parse_units(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| "is not a duration like 500ms, 30s, 2m, 1h or 7d".to_string())?;
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => return Err(format!("has unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    let d = Duration::try_from_secs_f64(value * unit_secs)
        .map_err(|_| "is longer than 7d".to_string())?;
    if d > MAX_DURATION {
        return Err("is longer than 7d".to_string());
    }
    Ok(d)
}

/// A duration setting named `key` (a flag or config key), as a CLI error.
pub fn duration(key: &str, text: &str) -> Result<Duration, CliError> {
    parse_duration(text).map_err(|reason| {
        SettingsError::Duration {
            key: key.to_string(),
            value: text.to_string(),
            reason,
        }
        .into()
    })
}

/// Which async runtime a command needs.
#[derive(Debug, Clone, Copy)]
pub enum Runtime {
    /// Registry reads and writes: one thread is plenty.
    Registry,
    /// Deploys and quickstart: verification polls several endpoints while a target
    /// applies, and quickstart watches for signals while it works.
    Deploy,
}

/// The async runtime for one command.
pub fn runtime(kind: Runtime) -> Result<tokio::runtime::Runtime, CliError> {
    let mut builder = match kind {
        Runtime::Registry => tokio::runtime::Builder::new_current_thread(),
        Runtime::Deploy => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| SettingsError::Runtime(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use predict_buy_deploy::CONFIG_FILE;

    fn file(root: impl Into<PathBuf>) -> RegistryUrl {
        RegistryUrl::File { root: root.into() }
    }

    fn at(cwd: &Path, vars: Vars) -> Settings {
        Settings::new(cwd.to_path_buf(), vars)
    }

    #[test]
    fn registry_flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let none = at(&sub, Vars::default());
        assert_eq!(
            none.registry_url(None, None).unwrap(),
            file(".predict-buy/registry")
        );
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "registry: file://shared/reg\nenvironments:\n  nonprod: {target: local}\n",
        )
        .unwrap();
        assert_eq!(
            none.registry_url(None, None).unwrap(),
            file(dir.path().join("shared/reg"))
        );
        let with_env = at(
            &sub,
            Vars {
                registry: Some("s3://team-models/x".into()),
                ..Vars::default()
            },
        );
        assert_eq!(
            with_env.registry_url(None, None).unwrap(),
            RegistryUrl::S3 {
                bucket: "team-models".into(),
                prefix: "x".into()
            }
        );
        assert_eq!(
            with_env.registry_url(Some("/srv/reg"), None).unwrap(),
            file("/srv/reg")
        );
    }

    #[test]
    fn an_explicit_config_is_read_relative_to_the_current_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/team.yaml"), "registry: file://reg\n").unwrap();
        let s = at(dir.path(), Vars::default());
        assert_eq!(
            s.registry_url(None, Some(Path::new("conf/team.yaml")))
                .unwrap(),
            file(dir.path().join("conf/reg"))
        );
        // A missing explicit config is bad input, as in every command.
        let err = s
            .registry_url(None, Some(Path::new("conf/missing.yaml")))
            .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
    }

    #[test]
    fn a_flag_does_not_need_a_valid_project_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "registri: typo\n").unwrap();
        let s = at(dir.path(), Vars::default());
        assert_eq!(
            s.registry_url(Some("/srv/reg"), None).unwrap(),
            file("/srv/reg")
        );
        let err = s.registry_url(None, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("registri"), "{err}");
    }

    #[test]
    fn project_file_without_registry_key_falls_back_to_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "environments: {}\n").unwrap();
        assert_eq!(
            at(dir.path(), Vars::default())
                .registry_url(None, None)
                .unwrap(),
            file(".predict-buy/registry")
        );
    }

    #[test]
    fn bad_urls_are_input_errors_naming_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let s = at(dir.path(), Vars::default());
        let err = s.registry_url(Some("http://x"), None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--registry"), "{err}");
        let err = at(
            dir.path(),
            Vars {
                registry: Some("gs://b".into()),
                ..Vars::default()
            },
        )
        .registry_url(None, None)
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(env::REGISTRY), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), "registry: gs://bucket\n").unwrap();
        let err = s.registry_url(None, None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(msg.contains(CONFIG_FILE) && msg.contains("gs://"), "{msg}");
    }

    #[test]
    fn zero_and_huge_durations_are_refused_everywhere() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in [
            "0s", "0", "0ms", "8d", "10081m", "fast", "-1s", "", "1w", ".",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} was accepted");
        }
        let err = duration("--lease-ttl", "0s").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.to_string(), "--lease-ttl `0s` must be more than zero");
    }

    #[test]
    fn hours_and_days_parse_up_to_a_week() {
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_min_age("7d"), Ok(MAX_DURATION));
        assert_eq!(parse_min_age("168h"), Ok(MAX_DURATION));
        assert_eq!(parse_min_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_min_age("0"), Ok(Duration::ZERO));
        assert_eq!(parse_min_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_min_age("8d"), Err("is longer than 7d".to_string()));
        assert_eq!(
            parse_min_age("99999999999999999999d"),
            Err("is longer than 7d".to_string())
        );
        assert_eq!(
            parse_min_age("1w"),
            Err("has unknown unit `w` (use ms, s, m, h or d)".to_string())
        );
        assert!(parse_min_age("h").unwrap_err().contains("not a duration"));
        assert!(parse_min_age("-1h").is_err());
    }

    #[test]
    fn a_zero_verify_timeout_in_the_config_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "environments:\n  nonprod:\n    target: local\n    verify_timeout: 0s\n",
        )
        .unwrap();
        let s = at(dir.path(), Vars::default());
        let project = s.require_project(None).unwrap();
        let err = s.environment(&project, Some("nonprod")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let msg = err.to_string();
        assert!(
            msg.contains("environments.nonprod.verify_timeout `0s` must be more than zero"),
            "{msg}"
        );
    }

    #[test]
    fn admin_token_env_beats_file_and_a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "  s3cret\n").unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let s = at(
            dir.path(),
            Vars {
                admin_token_file: Some("token".into()),
                ..Vars::default()
            },
        );
        assert_eq!(s.admin_token(None).unwrap().as_deref(), Some("s3cret"));
        let err = s.admin_token(Some(Path::new("empty"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = s.admin_token(Some(Path::new("nope"))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let s = at(
            dir.path(),
            Vars {
                admin_token: Some("from-env".into()),
                admin_token_file: Some("nope".into()),
                ..Vars::default()
            },
        );
        assert_eq!(s.admin_token(None).unwrap().as_deref(), Some("from-env"));
        assert_eq!(
            at(dir.path(), Vars::default()).admin_token(None).unwrap(),
            None
        );
    }

    #[test]
    fn actor_prefers_the_explicit_actor_then_user_then_the_uid_name() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = at(
            dir.path(),
            Vars {
                actor: Some("octocat".into()),
                user: Some("runner".into()),
                ..Vars::default()
            },
        );
        assert_eq!(explicit.actor(), "octocat");
        let id = explicit.identity();
        assert_eq!(id.actor, "octocat");
        // The lease names the process that holds it, not the person.
        assert!(id.holder.starts_with("runner@"), "{}", id.holder);
        assert!(
            id.holder
                .ends_with(&format!("(pid {})", std::process::id())),
            "{}",
            id.holder
        );
        let user = at(
            dir.path(),
            Vars {
                user: Some("alice".into()),
                ..Vars::default()
            },
        );
        assert_eq!(user.actor(), "alice");
        let uid = nix::unistd::getuid();
        let expected = nix::unistd::User::from_uid(uid)
            .unwrap()
            .map_or(format!("uid {uid}"), |u| u.name);
        let nobody = at(dir.path(), Vars::default()).actor();
        assert_eq!(nobody, expected);
        assert_ne!(nobody, "unknown");
    }
}
