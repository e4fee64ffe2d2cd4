//! The predict-buy registry: the single source of truth for which model bytes belong to
//! which release and which release should run where.
//!
//! It stores, on a local folder (`file://DIR`) or in S3 (`s3://bucket/prefix`):
//! - **artifacts**, content-addressed by sha256 and immutable
//!   (`registry-v1/objects/sha256/<hex>`); every read re-checks the digest;
//! - **releases**, immutable `vMAJOR.MINOR.PATCH` records naming an artifact, its
//!   metrics and golden predictions (`registry-v1/releases/<tag>.json`);
//! - per **environment**, the desired release with a generation counter
//!   (`envs/<env>/state.json`), an append-only history (`envs/<env>/history/<seq>.json`)
//!   and an expiring deploy lease (`envs/<env>/lease.json`).
//!
//! Every write is atomic (staged file + rename on disk, single PUT or completed
//! multipart upload on S3), so a crash mid-write leaves the previous state readable.
//! Records that many writers race for use conditional writes (create-if-absent,
//! compare-and-swap), so no writer can silently overwrite another; see
//! `store.rs` for how each backend does it.
//!
//! What it must never do: train, load or interpret models, or know anything of their
//! format. It stores bytes and records; deciding what to deploy, and checking that
//! something runs, belongs to the `deploy` crate.
//!
//! ```no_run
//! use predict_buy_registry::{Registry, RegistryUrl, ReleaseTag, EnvName};
//!
//! # async fn demo() -> predict_buy_registry::Result<()> {
//! let registry = Registry::open(&RegistryUrl::parse("file://.predict-buy/registry")?)?;
//! let pushed = registry.push_file("models/model.pbm".as_ref()).await?;
//! println!("{}", pushed.digest);
//! let tag = ReleaseTag::parse("v1.2.0")?;
//! let release = registry.get_release(&tag).await?;
//! let env = EnvName::parse("nonprod")?;
//! registry.set_desired(&env, Some(&release.tag), "alice", None).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one [`enum@Error`]; [`Error::is_user_error`] tells bad input (exit code 2)
//! from failed operations (exit code 1).

mod artifacts;
mod envs;
mod error;
mod names;
mod releases;
mod store;

pub use artifacts::{ArtifactInfo, ArtifactPointer, CorruptObject, PushOutcome, VerifyReport};
pub use envs::{EnvState, HistoryEntry, Lease, NewHistoryEntry, Outcome};
pub use error::{Error, Result};
pub use names::{Digest, EnvName, RegistryUrl, ReleaseTag};
pub use releases::{CreateOutcome, GoldenPrediction, ReleaseRecord};
pub use store::{INSTANCE_CREDENTIALS_VAR, RegistryOptions, S3Options};

/// The default registry URL when nothing is configured.
pub const DEFAULT_REGISTRY_URL: &str = "file://.predict-buy/registry";

/// An open registry. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Registry {
    url: RegistryUrl,
    store: store::Store,
}

impl Registry {
    /// Open a registry, taking S3 settings from the usual AWS environment variables.
    /// A `file://` folder is created if missing. Nothing is contacted yet: an
    /// unreachable S3 endpoint shows up on the first operation, after a few bounded
    /// retries (see [`S3Options`]).
    pub fn open(url: &RegistryUrl) -> Result<Self> {
        Self::open_with(url, &RegistryOptions::default())
    }

    /// Open a registry with explicit options; `None` fields of [`S3Options`] still
    /// fall back to the environment.
    pub fn open_with(url: &RegistryUrl, options: &RegistryOptions) -> Result<Self> {
        Ok(Registry {
            url: url.clone(),
            store: store::Store::open(url, options)?,
        })
    }

    /// The URL this registry was opened with.
    pub fn url(&self) -> &RegistryUrl {
        &self.url
    }

    /// The URL, plus the endpoint for S3: what error messages call this registry.
    pub fn describe(&self) -> &str {
        self.store.label()
    }

    /// For `file://` registries, where an artifact's bytes live on disk.
    pub fn local_object_path(&self, digest: &Digest) -> Option<std::path::PathBuf> {
        self.store.local_path(&artifacts::object_rel(digest))
    }
}
