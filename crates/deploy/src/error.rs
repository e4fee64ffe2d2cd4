//! The deploy crate's error type.

use std::path::PathBuf;

use predict_buy_registry::{EnvName, ReleaseTag};

/// Shorthand for results whose error is the deploy [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a deploy before or while it runs.
///
/// Messages name the file, key, environment or tag concerned. [`Error::exit_code`]
/// separates bad input (2) from operations that failed (1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `predict-buy.yaml` in the folder or any folder above it.
    #[error("no {} in {} or any folder above it", crate::config::CONFIG_FILE, .start.display())]
    ConfigNotFound { start: PathBuf },

    /// The config file exists but cannot be read.
    #[error("cannot read {}", .path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The config file is not valid: unknown key, wrong type, bad value.
    #[error("{}: {message}", .path.display())]
    ConfigInvalid { path: PathBuf, message: String },

    /// `--env` names an environment the config does not define.
    #[error("unknown environment `{env}`: {} defines {}", .path.display(), list_or_none(.known))]
    UnknownEnv {
        env: String,
        path: PathBuf,
        known: Vec<String>,
    },

    /// No `--env`, and no environment follows the current git branch.
    #[error("no environment in {} follows git branch `{branch}` (pass --env)", .path.display())]
    NoEnvForBranch { branch: String, path: PathBuf },

    /// No `--env`, and the current git branch cannot be read.
    #[error("no --env given and the current git branch of {} cannot be read: {reason}", .dir.display())]
    NoBranch { dir: PathBuf, reason: String },

    /// The tag is a valid release name but no git tag of that name exists.
    #[error("git tag `{tag}` does not exist in the repository at {}", .dir.display())]
    GitTagMissing { tag: ReleaseTag, dir: PathBuf },

    /// Git tag validation was asked for but the project is not in a git repository.
    #[error("{} is not in a git repository, so tag `{tag}` cannot be checked (set `require_git_tag: false` in the project config to deploy without git tags)", .dir.display())]
    NotAGitRepo { tag: ReleaseTag, dir: PathBuf },

    /// `git` could not be run.
    #[error("cannot run git in {}", .dir.display())]
    Git {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The environment's policy refuses the release.
    #[error(
        "release `{tag}` was never verified in `{required}`, and `{env}` only takes releases verified there"
    )]
    NotVerifiedIn {
        tag: ReleaseTag,
        env: EnvName,
        required: String,
    },

    /// The release is not one that may be deployed by a rollback.
    #[error(
        "release `{tag}` was never verified in `{env}`, or its last deploy there failed; a rollback only returns to a verified release"
    )]
    NotARollbackTarget { tag: ReleaseTag, env: EnvName },

    /// There is nothing verified to roll back to.
    #[error("environment `{env}` has no verified release other than {} to roll back to", display_opt(.current))]
    NoRollbackTarget {
        env: EnvName,
        current: Option<ReleaseTag>,
    },

    /// The environment's target kind exists in the config schema but not in code yet.
    #[error(
        "environment `{env}` uses target `{target}`, which is not supported yet; use `target: local`"
    )]
    TargetUnsupported { env: EnvName, target: &'static str },

    /// A local target needs endpoints to verify.
    #[error("environment `{env}` has no endpoints in {}; a local target is verified through them", .path.display())]
    NoEndpoints { env: EnvName, path: PathBuf },

    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),

    /// A Kubernetes environment's settings in `predict-buy.yaml` are wrong.
    #[error("environment `{env}` in {}: {message}", .path.display())]
    KubernetesConfig {
        env: EnvName,
        path: PathBuf,
        message: String,
    },

    /// The cluster refused or failed an operation (boxed: kube's errors are large, and
    /// every `Result` of this crate carries this enum).
    #[error(transparent)]
    Kube(Box<crate::kubernetes::KubeError>),

    /// A canary could not start or run (see [`crate::canary::CanaryError`]).
    #[error(transparent)]
    Canary(#[from] crate::canary::CanaryError),

    /// A registry operation failed (or named something that does not exist).
    #[error(transparent)]
    Registry(#[from] predict_buy_registry::Error),

    /// Applying a release failed, and so did recording that failure in the history.
    /// The apply error comes first: it is what went wrong.
    #[error("{original} (and this failure could not be recorded in the history of `{env}`)")]
    Unrecorded {
        env: EnvName,
        original: Box<Error>,
        #[source]
        record: Box<Error>,
    },
}

impl From<crate::kubernetes::KubeError> for Error {
    fn from(e: crate::kubernetes::KubeError) -> Self {
        Error::Kube(Box::new(e))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "no environments".to_string()
    } else {
        items
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn display_opt(tag: &Option<ReleaseTag>) -> String {
    tag.as_ref()
        .map_or_else(|| "nothing".to_string(), |t| format!("`{t}`"))
}

impl Error {
    /// 2 for bad input (config, names, tags, policy), 1 for failed operations.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Registry(e) => e.exit_code() as u8,
            Error::Unrecorded { original, .. } => original.exit_code(),
            Error::Canary(c) => c.exit_code(),
            Error::ConfigRead { .. } | Error::Git { .. } | Error::Http(_) => 1,
            Error::Kube(k) if !k.is_input() => 1,
            _ => 2,
        }
    }

    /// A next step for the user, when one is obvious.
    pub fn hint(&self) -> Option<String> {
        use predict_buy_registry::Error as R;
        Some(match self {
            Error::ConfigNotFound { .. } => {
                "run `predict-buy quickstart` to create one, or see docs/operations.md".into()
            }
            Error::UnknownEnv { .. } | Error::NoEnvForBranch { .. } => {
                "pass --env NAME with an environment from predict-buy.yaml".into()
            }
            Error::GitTagMissing { tag, .. } => {
                format!("create it with `git tag {tag}` (and push it) before deploying")
            }
            Error::NotVerifiedIn { required, tag, .. } => format!(
                "deploy it to `{required}` first (`predict-buy deploy {tag} --env {required}`), or pass --force"
            ),
            Error::Unrecorded { original, env, .. } => {
                let first = original.hint();
                let check = format!(
                    "check `predict-buy history --env {env}`: its last entry may be a dangling `started`"
                );
                match first {
                    Some(h) => format!("{h}; {check}"),
                    None => check,
                }
            }
            Error::Kube(k) => return k.hint(),
            Error::NoRollbackTarget { env, .. } => {
                format!("see `predict-buy history --env {env}`, or deploy a release")
            }
            Error::Registry(R::UnknownRelease { .. }) => {
                "run `predict-buy release list` to see releases".into()
            }
            Error::Registry(R::LeaseHeld { env, .. }) => format!(
                "wait for that deploy to finish; if it crashed, the lease expires by itself, or see `predict-buy status --env {env}` and docs/operations.md"
            ),
            _ => return None,
        })
    }
}
