//! The registry's error type.

use std::path::PathBuf;

use jiff::Timestamp;

use crate::names::{Digest, EnvName, ReleaseTag};

/// Shorthand for results whose error is the registry [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the registry.
///
/// Each message names the thing it is about (URL, object, tag, environment) and keeps
/// the underlying cause in [`std::error::Error::source`], so a caller printing the
/// chain gets the whole story. [`Error::is_user_error`] separates bad input (exit
/// code 2) from failed operations (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry URL is not one we can open.
    #[error("invalid registry URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A digest (or digest prefix) given by the user is malformed.
    #[error("invalid digest `{input}`: {reason}")]
    InvalidDigest { input: String, reason: String },

    /// A release tag is not `vMAJOR.MINOR.PATCH`.
    #[error("invalid release tag `{input}`: {reason}")]
    InvalidTag { input: String, reason: String },

    /// An environment name is not a lowercase DNS label.
    #[error("invalid environment name `{input}`: {reason}")]
    InvalidEnv { input: String, reason: String },

    /// A record handed to the registry is not acceptable (e.g. a golden input that is
    /// not a JSON object).
    #[error("invalid record for `{object}`: {reason}")]
    InvalidRecord { object: String, reason: String },

    /// An `s3://` registry was requested without any way to authenticate.
    #[error("no S3 credentials for `{url}`: {reason}")]
    MissingCredentials { url: String, reason: String },

    /// A command that only reads found no registry at the URL (nothing was ever
    /// written there, or the URL is wrong). Nothing is created by looking.
    #[error("no registry at {registry}: {reason}")]
    NoRegistry { registry: String, reason: String },

    /// No artifact with this digest (or digest prefix) exists.
    #[error("unknown artifact `{reference}` in registry {registry}")]
    UnknownDigest { reference: String, registry: String },

    /// A digest prefix matches more than one artifact.
    #[error("digest prefix `{prefix}` is ambiguous in registry {registry}: it matches {}", list(.matches))]
    AmbiguousDigest {
        prefix: String,
        registry: String,
        matches: Vec<Digest>,
    },

    /// No release with this tag exists.
    #[error("unknown release `{tag}` in registry {registry}")]
    UnknownRelease { tag: ReleaseTag, registry: String },

    /// The tag is already released with different content; releases are immutable.
    #[error(
        "release `{tag}` already exists with a different {}; releases are immutable, cut a new tag instead",
        .differing.join(", ")
    )]
    ReleaseExists {
        tag: ReleaseTag,
        differing: Vec<&'static str>,
    },

    /// Stored bytes do not hash to the digest they are stored under.
    #[error("corrupt object `{object}`: expected {expected}, but its content hashes to {actual}")]
    Corrupt {
        object: String,
        expected: Digest,
        actual: String,
    },

    /// A stored record cannot be decoded.
    #[error("record `{object}` in registry {registry} is not valid")]
    Decode {
        object: String,
        registry: String,
        #[source]
        source: serde_json::Error,
    },

    /// Somebody else holds the environment's lease and it has not expired.
    #[error(
        "environment `{env}` is locked by `{holder}` for {operation} since {since} (lease expires {expires_at})"
    )]
    LeaseHeld {
        env: EnvName,
        holder: String,
        operation: String,
        since: Timestamp,
        expires_at: Timestamp,
    },

    /// The environment already has a candidate (a shadow or a canary); stop it first.
    #[error(
        "environment `{env}` already has a candidate{}: stop it before starting another",
        match (.release, .mode) { (Some(r), Some(m)) => format!(" ({m} of {r})"), _ => String::new() }
    )]
    CandidateExists {
        env: EnvName,
        release: Option<String>,
        mode: Option<&'static str>,
    },

    /// The caller's lease was released, broken or taken over by someone else.
    #[error(
        "lease on environment `{env}` held by `{holder}` was lost (released, broken or taken over)"
    )]
    LeaseLost { env: EnvName, holder: String },

    /// The environment state changed between read and write.
    #[error(
        "environment `{env}` changed concurrently: expected generation {expected}, found {actual}"
    )]
    Conflict {
        env: EnvName,
        expected: u64,
        actual: u64,
    },

    /// Too many writers raced for the same record and we gave up.
    #[error("gave up writing `{object}` after {attempts} attempts: too many concurrent writers")]
    Contention { object: String, attempts: u32 },

    /// A file changed while it was being pushed, so its bytes no longer match the digest.
    #[error("file `{}` changed while it was being pushed (expected {expected}, read {actual})", .path.display())]
    ChangedDuringPush {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },

    /// No data object with this digest is stored.
    #[error("unknown data object `{digest}` in registry {registry}")]
    UnknownData { digest: Digest, registry: String },

    /// A stored data object cannot be decompressed: damaged bytes, or not zstd.
    #[error("corrupt data object `{object}`: it does not decompress")]
    CorruptCompression {
        object: String,
        #[source]
        source: std::io::Error,
    },

    /// A pull would replace a local file whose content differs from the one asked for.
    #[error(
        "`{}` exists with different content ({existing}) than {wanted}; move it away or pull with --force",
        .path.display()
    )]
    WouldClobber {
        path: PathBuf,
        existing: Digest,
        wanted: Digest,
    },

    /// The storage backend failed (unreachable endpoint, permissions, …).
    #[error("{op} `{object}` in registry {registry} failed")]
    Store {
        op: &'static str,
        object: String,
        registry: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// The storage backend could not be configured.
    #[error("cannot open registry `{url}`")]
    Open {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// A local file operation failed.
    #[error("{op} `{}` failed", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A pointer file cannot be read or written.
    #[error("pointer file `{}` is not valid", .path.display())]
    Pointer {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

fn list(digests: &[Digest]) -> String {
    digests
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// True when the error is the caller's input (bad URL, tag, digest, env name,
    /// unknown tag or digest, a conflicting release, a registry that does not exist
    /// where a read looked for it): a CLI maps these to exit code 2.
    /// Everything else is an operation that failed (unreachable store, corrupt object,
    /// held lease, …): exit code 1.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidUrl { .. }
                | Error::InvalidDigest { .. }
                | Error::InvalidTag { .. }
                | Error::InvalidEnv { .. }
                | Error::InvalidRecord { .. }
                | Error::MissingCredentials { .. }
                | Error::NoRegistry { .. }
                | Error::UnknownDigest { .. }
                | Error::UnknownData { .. }
                | Error::WouldClobber { .. }
                | Error::AmbiguousDigest { .. }
                | Error::UnknownRelease { .. }
                | Error::ReleaseExists { .. }
                | Error::Pointer { .. }
        )
    }

    /// The exit code a CLI should use for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.is_user_error() { 2 } else { 1 }
    }
}
