//! The predict-buy registry: the single source of truth for which model bytes belong to
//! which release and which release should run where. It replaces the original
//! pipeline's DVC remote and image-tag bookkeeping.
//!
//! **What it must never do:** train, load or interpret models, or know anything of
//! their format. It stores bytes and records. Deciding what to deploy, and checking
//! that something runs, belong to the `deploy` crate; the CLI only calls this API.
//!
//! # Backends
//!
//! A [`RegistryUrl`] is `file://DIR` (relative paths are relative to the current
//! folder; default [`DEFAULT_REGISTRY_URL`]), a plain path, or `s3://bucket/prefix`.
//! S3 settings come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION` and `AWS_ENDPOINT_URL`, or
//! from [`S3Options`]. With an endpoint override requests are path-style and `http://`
//! is allowed (MinIO, test servers). Requests are retried at most 3 times with
//! exponential backoff (100 ms → 1 s) within 5 s, connecting times out after 2 s,
//! so an unreachable endpoint fails within seconds with an error naming the endpoint.
//!
//! # Layout (`registry-v1/…`, versioned so a future layout can live beside it)
//!
//! ```text
//! registry-v1/objects/sha256/<hex>                 artifact bytes, immutable
//! registry-v1/data/sha256/<hex>.zst                data file, zstd; <hex> = sha256 of the raw bytes
//! registry-v1/releases/<tag>.json                  ReleaseRecord, immutable
//! registry-v1/envs/<env>/state.json                EnvState: desired release + generation
//! registry-v1/envs/<env>/history/<seq:020>.json    HistoryEntry, append-only
//! registry-v1/envs/<env>/lease.json                Lease
//! registry-v1/envs/<env>/candidate.json            Candidate: a shadow or canary release
//! registry-v1/locks/…                              file:// only: flock files for CAS
//! ```
//!
//! # Data
//!
//! Training data is versioned beside the models ([`Registry::push_data_file`],
//! [`Registry::pull_data_to`], [`DataPointer`]): named by the sha256 of the raw bytes,
//! stored zstd-compressed, streamed both ways in bounded memory, and re-hashed on
//! every read. A release records the digests of its data ([`TrainingRecord`]), and
//! [`Registry::collect_unreferenced_data`] never removes data a release names.
//!
//! # Atomicity and concurrency
//!
//! - Every write is atomic: on disk a staged file is fsynced and then renamed (or
//!   hard-linked) into place; on S3 a single PUT or a completed multipart upload. A
//!   writer killed mid-write leaves the previous state readable (tested by killing a
//!   writer process). [`Registry::interrupted_writes`] lists what such a writer may
//!   leave (staging files on disk, unfinished multipart uploads on S3) and
//!   [`Registry::clean_interrupted_writes`] sweeps those older than a threshold.
//! - Artifacts are named by their digest and every read re-hashes them
//!   ([`Error::Corrupt`] on mismatch). A push of bytes already stored intact uploads
//!   nothing.
//! - Releases and history entries are written with a conditional create (S3
//!   `If-None-Match: *`, a hard link on disk): of two writers of one key exactly one
//!   wins, the other sees it and reacts (identical release → no-op, different →
//!   [`Error::ReleaseExists`]; history → next sequence number).
//! - Environment state and leases are compare-and-swap: S3 `If-Match` on the ETag; on
//!   disk, where object_store has no conditional update, an advisory `flock` per record
//!   around re-read, compare, atomic replace. The kernel drops a `flock` when its
//!   holder dies, so a crash never leaves a stale lock.
//!
//! # Example
//!
//! ```no_run
//! use predict_buy_registry::{EnvName, Registry, RegistryUrl, ReleaseTag};
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
//! Errors are one [`enum@Error`] whose messages name the URL, object, tag or
//! environment concerned; [`Error::is_user_error`] / [`Error::exit_code`] tell bad
//! input (exit code 2) from failed operations (exit code 1).

mod artifacts;
mod candidate;
mod data;
mod envs;
mod error;
mod gc;
mod names;
mod releases;
mod store;

pub use artifacts::{ArtifactInfo, ArtifactPointer, CorruptObject, PushOutcome, VerifyReport};
pub use candidate::{Candidate, CandidateMode, DEFAULT_REQUEST_KEY_HEADER, RequestKey};
pub use data::{
    DataObject, DataPointer, DataPullOutcome, DataPushOutcome, POINTER_SUFFIX, PointerKind,
    data_digest_of_file,
};
pub use envs::{EnvState, HistoryEntry, Lease, NewHistoryEntry, Outcome};
pub use error::{Error, Result};
pub use gc::{DataGcReport, GcMode, GcReport, InterruptedWrite};
pub use names::{Digest, EnvName, RegistryUrl, ReleaseTag};
pub use releases::{CreateOutcome, DataRef, GoldenPrediction, ReleaseRecord, TrainingRecord};
pub use store::{INSTANCE_CREDENTIALS_VAR, RegistryOptions, S3Options};

/// The default registry URL when nothing is configured.
pub const DEFAULT_REGISTRY_URL: &str = "file://.predict-buy/registry";

/// An open registry. Writers open it with [`Registry::open`], which creates a
/// `file://` folder; commands that only read use [`Registry::open_existing`]. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Registry {
    url: RegistryUrl,
    store: store::Store,
}

impl Registry {
    /// Open a registry to write to it, taking S3 settings from the usual AWS
    /// environment variables. A `file://` folder is created if missing. Nothing is
    /// contacted yet: an unreachable S3 endpoint shows up on the first operation, after
    /// a few bounded retries (see [`S3Options`]).
    pub fn open(url: &RegistryUrl) -> Result<Self> {
        Self::open_with(url, &RegistryOptions::default())
    }

    /// [`Registry::open`] with explicit options; `None` fields of [`S3Options`] still
    /// fall back to the environment.
    pub fn open_with(url: &RegistryUrl, options: &RegistryOptions) -> Result<Self> {
        Ok(Registry {
            url: url.clone(),
            store: store::Store::open(url, options, store::Create::IfMissing)?,
        })
    }

    /// Open a registry that must already exist, for commands that only read: a
    /// mistyped URL must not leave an empty registry behind, nor answer "no releases"
    /// as if it were a real, empty one. Creates nothing. [`Error::NoRegistry`] when
    /// there is no `registry-v1/` folder (`file://`) or no object under
    /// `<prefix>/registry-v1/` (S3, which costs one listing request).
    pub async fn open_existing(url: &RegistryUrl) -> Result<Self> {
        Self::open_existing_with(url, &RegistryOptions::default()).await
    }

    /// [`Registry::open_existing`] with explicit options.
    pub async fn open_existing_with(url: &RegistryUrl, options: &RegistryOptions) -> Result<Self> {
        let store = store::Store::open(url, options, store::Create::Never)?;
        if !store.exists().await? {
            let RegistryUrl::S3 { bucket, .. } = url else {
                unreachable!("a file:// registry without its folder fails to open")
            };
            return Err(Error::NoRegistry {
                registry: store.label().to_string(),
                reason: format!(
                    "bucket `{bucket}` holds no object under `{}/`",
                    store.layout_prefix()
                ),
            });
        }
        Ok(Registry {
            url: url.clone(),
            store,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Callers (the server, deploys) run registry calls on spawned tasks, so every
    /// future must be `Send`; this fails to compile if one is not.
    #[allow(dead_code, clippy::let_underscore_future)]
    async fn futures_are_send(reg: &Registry, d: &Digest, t: &ReleaseTag, e: &EnvName, l: &Lease) {
        let p = std::path::Path::new("x");
        let ttl = std::time::Duration::from_secs(1);
        assert_send(&reg.push_file(p));
        assert_send(&reg.push_bytes(bytes::Bytes::new()));
        assert_send(&reg.pull(d));
        assert_send(&reg.pull_to(d, p));
        assert_send(&reg.list_artifacts());
        assert_send(&reg.verify());
        assert_send(&reg.resolve_digest("abc"));
        assert_send(&reg.list_releases());
        assert_send(&reg.get_release(t));
        assert_send(&reg.env_state(e));
        assert_send(&reg.set_desired(e, Some(t), "a", None));
        assert_send(&reg.history(e));
        assert_send(&reg.acquire_lease(e, "a", "b", ttl));
        assert_send(&reg.renew_lease(l, ttl));
        assert_send(&reg.release_lease(l));
        assert_send(&reg.break_lease(e));
        assert_send(&reg.interrupted_writes());
        assert_send(&reg.clean_interrupted_writes(ttl, GcMode::Remove));
        assert_send(&Registry::open_existing(reg.url()));
    }

    #[test]
    fn registry_is_shareable() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<Registry>();
    }
}
