//! The CLI's error: the chain to print, the exit code it maps to and an optional hint.
//!
//! Exit codes are decided here and nowhere else: each library error converts with
//! `From`, so a plain `?` in a command is correct, and each conversion matches every
//! variant, so a new variant forces a decision. 0 success, 1 the operation failed,
//! 2 bad usage or invalid input; a quickstart stopped by a signal exits 128 + its
//! number, as a shell reports it; a closed stdout (`predict-buy … | head`) exits 0
//! quietly, as ripgrep does.

use std::fmt::{self, Display};
use std::io::ErrorKind;
use std::path::PathBuf;

use predict_buy_data::DataError;
use predict_buy_model::{ArtifactError, TrainError};
use predict_buy_serve::ReloadError;

use crate::settings::SettingsError;

pub type Outcome = Result<(), CliError>;

/// What the process reports to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The operation failed (1).
    Failed,
    /// Bad usage or invalid input (2).
    Input,
    /// Stopped by this signal (128 + its number).
    Signal(i32),
    /// Whoever read stdout went away; nothing is left to tell anyone (0, silent).
    ClosedStdout,
}

impl Code {
    pub fn exit(self) -> u8 {
        match self {
            Code::Failed => 1,
            Code::Input => 2,
            Code::Signal(n) => u8::try_from(128 + n).unwrap_or(1),
            Code::ClosedStdout => 0,
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub error: anyhow::Error,
    pub code: Code,
    pub hint: Option<String>,
}

/// File and stream operations of the CLI itself, with the path they concern.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A file the user named, or one a command reads as its input.
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A training config the user named.
    #[error("cannot read config {}", .path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
    #[error("cannot start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl IoError {
    pub fn read(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| IoError::Read { path, source }
    }

    pub fn write(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| IoError::Write { path, source }
    }
}

impl CliError {
    fn new(error: impl Into<anyhow::Error>, code: Code, hint: Option<String>) -> Self {
        CliError {
            error: error.into(),
            code,
            hint,
        }
    }

    /// Bad usage or invalid input found by the command itself (exit code 2).
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Self::new(error, Code::Input, None)
    }

    /// The operation failed, found by the command itself (exit code 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self::new(error, Code::Failed, None)
    }

    /// A plain message as an input error.
    pub fn usage(message: impl Display) -> Self {
        Self::input(anyhow::anyhow!("{message}"))
    }

    pub fn with_hint(mut self, hint: impl Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    /// Keeps the hint the conversion gave unless there was none.
    pub fn or_hint(self, hint: impl Display) -> Self {
        if self.hint.is_some() {
            self
        } else {
            self.with_hint(hint)
        }
    }

    pub fn context(mut self, context: impl Display + Send + Sync + 'static) -> Self {
        self.error = self.error.context(context);
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.code.exit()
    }

    /// Prints the chain and hint on stderr; a closed stdout prints nothing.
    pub fn report(&self) {
        if self.code == Code::ClosedStdout {
            return;
        }
        eprintln!("error: {}", self.error);
        for cause in self.error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

impl Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

/// A file the user pointed at is missing or not readable: their input. Anything else
/// (a full disk, an I/O error) is an operation that failed.
fn io_input(e: &std::io::Error) -> Code {
    match e.kind() {
        ErrorKind::NotFound
        | ErrorKind::PermissionDenied
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory
        | ErrorKind::InvalidData
        | ErrorKind::InvalidInput => Code::Input,
        _ => Code::Failed,
    }
}

impl From<IoError> for CliError {
    fn from(e: IoError) -> Self {
        let code = match &e {
            IoError::Read { source, .. } | IoError::Config { source, .. } => io_input(source),
            IoError::Write { .. } | IoError::Spawn { .. } => Code::Failed,
            IoError::Stdout(source) if source.kind() == ErrorKind::BrokenPipe => Code::ClosedStdout,
            IoError::Stdout(_) => Code::Failed,
        };
        Self::new(e, code, None)
    }
}

impl From<SettingsError> for CliError {
    fn from(e: SettingsError) -> Self {
        let (code, hint) = match &e {
            SettingsError::Duration { .. } => (Code::Input, None),
            SettingsError::RegistryUrl { .. } => (
                Code::Input,
                Some(format!(
                    "set the registry with --registry, {} or `registry:` in {}",
                    crate::project::env::REGISTRY,
                    predict_buy_deploy::CONFIG_FILE
                )),
            ),
            SettingsError::AdminTokenFile { .. } | SettingsError::AdminTokenEmpty { .. } => (
                Code::Input,
                Some(format!(
                    "set {} or point {} at a file holding the token",
                    crate::project::env::ADMIN_TOKEN,
                    crate::project::env::ADMIN_TOKEN_FILE
                )),
            ),
            SettingsError::CurrentDir(_) | SettingsError::Runtime(_) => (Code::Failed, None),
        };
        Self::new(e, code, hint)
    }
}

/// The data crate reads the user's files and rows: all of it is their input, except an
/// I/O failure that is not about a missing or unreadable file.
impl From<DataError> for CliError {
    fn from(e: DataError) -> Self {
        let code = match &e {
            DataError::Io { source, .. } => io_input(source),
            DataError::Csv { .. }
            | DataError::Empty { .. }
            | DataError::Ragged { .. }
            | DataError::DuplicateColumn { .. }
            | DataError::MissingColumn { .. }
            | DataError::BadValue { .. }
            | DataError::Config { .. }
            | DataError::Target { .. }
            | DataError::Invalid { .. } => Code::Input,
        };
        Self::new(e, code, None)
    }
}

impl From<TrainError> for CliError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Data(d) => d.into(),
            e @ (TrainError::Config { .. } | TrainError::Invalid(_)) => {
                Self::new(e, Code::Input, None)
            }
            // The model it just trained failed its own checks: our fault, not the data's.
            e @ TrainError::Artifact(_) => Self::new(e, Code::Failed, None),
        }
    }
}

/// An artifact is loaded from a file the user named; whatever is wrong with it is
/// wrong with their input. (Artifacts from the registry come through the registry,
/// which checks digests first.)
impl From<ArtifactError> for CliError {
    fn from(e: ArtifactError) -> Self {
        let hint = match &e {
            ArtifactError::NotAnArtifact
            | ArtifactError::Truncated { .. }
            | ArtifactError::Oversized { .. }
            | ArtifactError::CorruptHeader { .. }
            | ArtifactError::Checksum
            | ArtifactError::Payload(_)
            | ArtifactError::Trees(_)
            | ArtifactError::Invalid(_) => {
                Some("pass a file `predict-buy train` wrote (models/model.pbm by default)")
            }
            ArtifactError::NewerFormat { .. } => None,
        };
        Self::new(e, Code::Input, hint.map(str::to_string))
    }
}

impl From<ReloadError> for CliError {
    fn from(e: ReloadError) -> Self {
        let code = match &e {
            ReloadError::Registry { .. } => {
                let ReloadError::Registry { what, source } = e else {
                    unreachable!("matched above")
                };
                return CliError::from(*source).context(format!("cannot follow {what}"));
            }
            ReloadError::Read { source, .. } => io_input(source),
            ReloadError::Load { .. }
            | ReloadError::SelfCheck { .. }
            | ReloadError::DigestMismatch { .. } => Code::Input,
        };
        Self::new(
            e,
            code,
            Some("check the path, or train one with `predict-buy train`".into()),
        )
    }
}

/// What to do when a read finds no registry at the URL.
const NO_REGISTRY_HINT: &str = "push a model with `predict-buy model push` or run `predict-buy quickstart`; or point --registry, PREDICT_BUY_REGISTRY or `registry:` in predict-buy.yaml at an existing registry";

impl From<predict_buy_registry::Error> for CliError {
    fn from(e: predict_buy_registry::Error) -> Self {
        let (code, hint) = registry_decision(&e);
        Self::new(e, code, hint)
    }
}

/// The exit code and hint of a registry error.
fn registry_decision(e: &predict_buy_registry::Error) -> (Code, Option<String>) {
    use predict_buy_registry::Error as R;
    match e {
        R::UnknownRelease { .. } => (
            Code::Input,
            Some("run `predict-buy release list` to see releases".to_string()),
        ),
        R::UnknownDigest { .. } | R::AmbiguousDigest { .. } => (
            Code::Input,
            Some("run `predict-buy model list` to see stored artifacts".to_string()),
        ),
        R::UnknownData { .. } => (
            Code::Input,
            Some(
                "push the data with `predict-buy data push FILE`, or check --registry names the registry it was pushed to"
                    .to_string(),
            ),
        ),
        R::WouldClobber { .. } => (Code::Input, None),
        R::CorruptCompression { .. } => (
            Code::Failed,
            Some("pushing the original data file again repairs the object".to_string()),
        ),
        R::InvalidUrl { .. } => (
            Code::Input,
            Some(format!(
                "set the registry with --registry, {} or `registry:` in {}",
                crate::project::env::REGISTRY,
                predict_buy_deploy::CONFIG_FILE
            )),
        ),
        // Looking created nothing: the URL is wrong or nothing was ever written.
        R::NoRegistry { .. } => (Code::Input, Some(NO_REGISTRY_HINT.to_string())),
        R::InvalidDigest { .. }
        | R::InvalidTag { .. }
        | R::InvalidEnv { .. }
        | R::InvalidRecord { .. }
        | R::MissingCredentials { .. }
        | R::ReleaseExists { .. }
        | R::Pointer { .. } => (Code::Input, None),
        R::Corrupt { .. } => (
            Code::Failed,
            Some(
                "run `predict-buy model verify`; pushing the original file again repairs the object"
                    .to_string(),
            ),
        ),
        R::Store { .. } | R::Open { .. } => (
            Code::Failed,
            Some(format!(
                "check that the registry is reachable and the URL is right (--registry, {} or {})",
                crate::project::env::REGISTRY,
                predict_buy_deploy::CONFIG_FILE
            )),
        ),
        R::LeaseHeld { env, .. } => (
            Code::Failed,
            Some(format!(
                "wait for that deploy to finish; if it crashed, the lease expires by itself, or see `predict-buy status --env {env}` and docs/operations.md"
            )),
        ),
        // Another shadow or canary runs: the operation is refused as asked.
        R::CandidateExists { env, mode, .. } => (
            Code::Input,
            Some(match mode {
                Some("canary") => format!(
                    "wait for the canary's verdict (`predict-buy status --env {env}`); one whose deployer crashed is cleared by the next `deploy --canary` once its lease expires"
                ),
                _ => format!("stop it first with `predict-buy shadow stop --env {env}`"),
            }),
        ),
        R::Decode { .. }
        | R::LeaseLost { .. }
        | R::Conflict { .. }
        | R::Contention { .. }
        | R::ChangedDuringPush { .. }
        | R::Io { .. } => (Code::Failed, None),
    }
}

impl From<predict_buy_deploy::Error> for CliError {
    fn from(e: predict_buy_deploy::Error) -> Self {
        match e {
            // The registry's own decision, with its hint.
            predict_buy_deploy::Error::Registry(r) => r.into(),
            e => {
                let code = deploy_code(&e);
                let hint = e.hint();
                Self::new(e, code, hint)
            }
        }
    }
}

fn deploy_code(e: &predict_buy_deploy::Error) -> Code {
    use predict_buy_deploy::Error as D;
    match e {
        D::Registry(r) => registry_decision(r).0,
        // What went wrong first decides; failing to record it does not change whose
        // fault it was.
        D::Unrecorded { original, .. } => deploy_code(original),
        // A config file the user named that is not there is bad input in every
        // command; any other failure to read it is not.
        D::ConfigRead { source, .. } => io_input(source),
        D::ConfigNotFound { .. }
        | D::ConfigInvalid { .. }
        | D::UnknownEnv { .. }
        | D::NoEnvForBranch { .. }
        | D::NoBranch { .. }
        | D::GitTagMissing { .. }
        | D::NotAGitRepo { .. }
        | D::NotVerifiedIn { .. }
        | D::NotARollbackTarget { .. }
        | D::NoRollbackTarget { .. }
        | D::TargetUnsupported { .. }
        | D::NoEndpoints { .. }
        | D::KubernetesConfig { .. } => Code::Input,
        D::Kube(k) if k.is_input() => Code::Input,
        D::Canary(c) if c.exit_code() == 2 => Code::Input,
        D::Canary(_) => Code::Failed,
        D::Git { .. } | D::Http(_) | D::Kube(_) => Code::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Code::Failed.exit(), 1);
        assert_eq!(Code::Input.exit(), 2);
        assert_eq!(Code::Signal(15).exit(), 143);
        assert_eq!(Code::Signal(2).exit(), 130);
        assert_eq!(Code::ClosedStdout.exit(), 0);
    }

    #[test]
    fn a_missing_input_file_is_bad_input_and_a_full_disk_is_not() {
        let missing = std::io::Error::from(ErrorKind::NotFound);
        let e: CliError = IoError::read("x.csv")(missing).into();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "cannot read x.csv: entity not found");
        let full = std::io::Error::from(ErrorKind::StorageFull);
        assert_eq!(CliError::from(IoError::read("x.csv")(full)).exit_code(), 1);
        let full = std::io::Error::from(ErrorKind::NotFound);
        assert_eq!(
            CliError::from(IoError::write("out.csv")(full)).exit_code(),
            1
        );
        let pipe = std::io::Error::from(ErrorKind::BrokenPipe);
        assert_eq!(
            CliError::from(IoError::Stdout(pipe)).code,
            Code::ClosedStdout
        );
    }

    #[test]
    fn a_missing_project_config_is_bad_input() {
        let e: CliError = predict_buy_deploy::LoadedConfig::load(std::path::Path::new(
            "/nonexistent/predict-buy.yaml",
        ))
        .unwrap_err()
        .into();
        assert_eq!(e.exit_code(), 2, "{e}");
    }

    #[test]
    fn registry_errors_keep_their_hints_through_deploy_errors() {
        let tag = predict_buy_registry::ReleaseTag::parse("v1.0.0").unwrap();
        let r = predict_buy_registry::Error::UnknownRelease {
            tag,
            registry: "file:///r".into(),
        };
        let e: CliError = predict_buy_deploy::Error::Registry(r).into();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.hint.as_deref(),
            Some("run `predict-buy release list` to see releases")
        );
    }

    #[test]
    fn a_missing_registry_is_bad_input_with_the_one_hint() {
        let e: CliError = predict_buy_registry::Error::NoRegistry {
            registry: "file:///nowhere".into(),
            reason: "no such folder".into(),
        }
        .into();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.hint.as_deref(), Some(NO_REGISTRY_HINT));
    }

    #[test]
    fn an_unrecorded_failure_exits_as_its_original_error() {
        use predict_buy_deploy::Error as D;
        let env = predict_buy_registry::EnvName::parse("nonprod").unwrap();
        let not_found = || D::ConfigNotFound {
            start: PathBuf::from("/p"),
        };
        let contention = || {
            D::Registry(predict_buy_registry::Error::Contention {
                object: "history".into(),
                attempts: 5,
            })
        };
        let e: CliError = D::Unrecorded {
            env: env.clone(),
            original: Box::new(contention()),
            record: Box::new(not_found()),
        }
        .into();
        assert_eq!(e.exit_code(), 1, "{e}");
        let e: CliError = D::Unrecorded {
            env,
            original: Box::new(not_found()),
            record: Box::new(contention()),
        }
        .into();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.hint.unwrap().contains("history --env nonprod"));
    }

    #[test]
    fn data_errors_are_input_and_artifact_errors_hint_at_train() {
        let e: CliError = DataError::Empty {
            source_name: "a.csv".into(),
        }
        .into();
        assert_eq!(e.exit_code(), 2);
        let e: CliError = ArtifactError::NotAnArtifact.into();
        assert_eq!(e.exit_code(), 2);
        assert!(e.hint.unwrap().contains("predict-buy train"));
    }
}
