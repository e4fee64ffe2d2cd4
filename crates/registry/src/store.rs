//! The storage layer: one `object_store` backend plus the few primitives the registry
//! needs (read with version, create-if-absent, compare-and-swap, list).
//!
//! Compare-and-swap differs by backend. S3 has conditional writes (`If-Match` on the
//! ETag, `If-None-Match: *`), which object_store exposes as `PutMode::Update` and
//! `PutMode::Create`. object_store's `LocalFileSystem` supports `PutMode::Create`
//! (a staged file hard-linked into place, atomic) but not `PutMode::Update`, so the
//! local backend serialises updates of one record with an advisory `flock` on a lock
//! file under `registry-v1/locks/`, re-reads the record under the lock, compares its
//! content hash and then writes with `PutMode::Overwrite` (staged file + rename, also
//! atomic). The kernel drops a `flock` when its holder dies, so a killed writer never
//! leaves a stale lock behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::names::RegistryUrl;

/// Version of the on-store layout; every key lives under this folder.
pub(crate) const LAYOUT: &str = "registry-v1";

/// How to reach an `s3://` registry. Fields left `None` come from the usual AWS
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Endpoint override, e.g. `http://127.0.0.1:9000` for MinIO or a test server.
    /// When set, requests are path-style; `http://` endpoints are allowed.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Retries after the first attempt (connection errors, 5xx, throttling).
    pub max_retries: usize,
    /// Stop retrying after this long since the first attempt.
    pub retry_timeout: Duration,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Give up on a single request after this long.
    pub request_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            max_retries: 3,
            retry_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Options for [`crate::Registry::open_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Used only for `s3://` registries.
    pub s3: S3Options,
}

#[derive(Debug)]
enum Kind {
    Local { root: PathBuf },
    S3,
}

/// A record's version as seen when it was read; writes conditional on it fail if the
/// record changed since.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    e_tag: Option<String>,
    content: [u8; 32],
}

/// The result of a conditional write.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cas {
    Written,
    /// Somebody else got there first (exists already / changed since read).
    Lost,
}

#[derive(Debug)]
pub(crate) struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Key prefix in the bucket (S3) or root (local), ending with `registry-v1`.
    base: String,
    kind: Kind,
    /// Human-readable description used in error messages.
    label: String,
}

impl Store {
    pub(crate) fn open(url: &RegistryUrl, options: &RegistryOptions) -> Result<Self> {
        match url {
            RegistryUrl::File { root } => Self::open_local(url, root),
            RegistryUrl::S3 { bucket, prefix } => Self::open_s3(url, bucket, prefix, &options.s3),
        }
    }

    fn open_local(url: &RegistryUrl, root: &std::path::Path) -> Result<Self> {
        let io_err = |op, source| Error::Io {
            op,
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root.join(LAYOUT))
            .map_err(|e| io_err("creating registry folder", e))?;
        let root = root
            .canonicalize()
            .map_err(|e| io_err("resolving registry folder", e))?;
        // fsync files and their folders before publishing them, so that after a power
        // loss (not only a killed process) a record is either the old or the new one.
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|source| Error::Open {
                url: url.to_string(),
                source: Box::new(source),
            })?
            .with_fsync(true);
        Ok(Store {
            inner: Arc::new(fs),
            base: LAYOUT.to_string(),
            kind: Kind::Local { root },
            label: url.to_string(),
        })
    }

    fn open_s3(url: &RegistryUrl, bucket: &str, prefix: &str, opts: &S3Options) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let set = |b: AmazonS3Builder,
                   value: &Option<String>,
                   f: fn(AmazonS3Builder, String) -> AmazonS3Builder| match value
        {
            Some(v) => f(b, v.clone()),
            None => b,
        };
        builder = set(builder, &opts.endpoint, |b, v| b.with_endpoint(v));
        builder = set(builder, &opts.region, |b, v| b.with_region(v));
        builder = set(builder, &opts.access_key_id, |b, v| b.with_access_key_id(v));
        builder = set(builder, &opts.secret_access_key, |b, v| {
            b.with_secret_access_key(v)
        });
        builder = set(builder, &opts.session_token, |b, v| b.with_token(v));

        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        check_credentials(url, &builder)?;

        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: opts.max_retries,
            retry_timeout: opts.retry_timeout,
        };
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        builder = builder
            .with_retry(retry)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                secs(opts.connect_timeout),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                secs(opts.request_timeout),
            );
        let s3 = builder.build().map_err(|source| Error::Open {
            url: url.to_string(),
            source: Box::new(source),
        })?;
        let base = if prefix.is_empty() {
            LAYOUT.to_string()
        } else {
            format!("{prefix}/{LAYOUT}")
        };
        let label = match &endpoint {
            Some(e) => format!("{url} (endpoint {e})"),
            None => url.to_string(),
        };
        Ok(Store {
            inner: Arc::new(s3),
            base,
            kind: Kind::S3,
            label,
        })
    }

    /// Describes the registry in messages: its URL, and the endpoint for S3.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn key(&self, rel: &str) -> Path {
        Path::from(format!("{}/{rel}", self.base))
    }

    /// The key relative to the layout folder, for messages and listing.
    fn rel<'a>(&self, key: &'a Path) -> &'a str {
        let s = key.as_ref();
        s.strip_prefix(&self.base)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(s)
    }

    fn err(&self, op: &'static str, rel: &str, source: object_store::Error) -> Error {
        Error::Store {
            op,
            object: format!("{LAYOUT}/{rel}"),
            registry: self.label.clone(),
            source: Box::new(source),
        }
    }

    /// Where an object lives on disk, for the local backend (tests corrupt objects
    /// through this).
    pub(crate) fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match &self.kind {
            Kind::Local { root } => Some(root.join(LAYOUT).join(rel)),
            Kind::S3 => None,
        }
    }

    /// Read a whole small object with its version; `None` if absent.
    pub(crate) async fn get(&self, rel: &str) -> Result<Option<(Bytes, Version)>> {
        let key = self.key(rel);
        let res = match self.inner.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("reading", rel, e)),
        };
        let e_tag = res.meta.e_tag.clone();
        let bytes = res.bytes().await.map_err(|e| self.err("reading", rel, e))?;
        let version = Version {
            e_tag,
            content: Sha256::digest(&bytes).into(),
        };
        Ok(Some((bytes, version)))
    }

    /// Stream an object: its size and a stream of chunks; `None` if absent.
    pub(crate) async fn get_stream(
        &self,
        rel: &str,
    ) -> Result<Option<(u64, BoxStream<'static, Result<Bytes>>)>> {
        let key = self.key(rel);
        let res = match self.inner.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err("reading", rel, e)),
        };
        let size = res.meta.size;
        let label = self.label.clone();
        let object = format!("{LAYOUT}/{rel}");
        let stream = res
            .into_stream()
            .map(move |r| {
                r.map_err(|source| Error::Store {
                    op: "reading",
                    object: object.clone(),
                    registry: label.clone(),
                    source: Box::new(source),
                })
            })
            .boxed();
        Ok(Some((size, stream)))
    }

    pub(crate) async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>> {
        match self.inner.head(&self.key(rel)).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("inspecting", rel, e)),
        }
    }

    /// Write `bytes` only if nothing exists at `rel` yet.
    pub(crate) async fn create(&self, rel: &str, bytes: Bytes) -> Result<Cas> {
        let opts = PutOptions::from(PutMode::Create);
        match self
            .inner
            .put_opts(&self.key(rel), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Cas::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Cas::Lost),
            // Some S3-compatible servers answer a lost `If-None-Match` race with 412.
            Err(object_store::Error::Precondition { .. }) => Ok(Cas::Lost),
            Err(e) => Err(self.err("creating", rel, e)),
        }
    }

    /// Replace `rel` only if it still has the version read earlier.
    pub(crate) async fn update(&self, rel: &str, bytes: Bytes, expected: &Version) -> Result<Cas> {
        match &self.kind {
            Kind::S3 => {
                let version = UpdateVersion {
                    e_tag: expected.e_tag.clone(),
                    version: None,
                };
                let opts = PutOptions::from(PutMode::Update(version));
                match self
                    .inner
                    .put_opts(&self.key(rel), PutPayload::from(bytes), opts)
                    .await
                {
                    Ok(_) => Ok(Cas::Written),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => Ok(Cas::Lost),
                    Err(e) => Err(self.err("updating", rel, e)),
                }
            }
            Kind::Local { .. } => {
                let _lock = self.lock(rel).await?;
                match self.get(rel).await? {
                    Some((_, current)) if current.content == expected.content => {}
                    _ => return Ok(Cas::Lost),
                }
                self.overwrite(rel, bytes).await?;
                Ok(Cas::Written)
            }
        }
    }

    /// Write `bytes` at `rel` whatever is there (atomically: readers see old or new).
    pub(crate) async fn overwrite(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&self.key(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err("writing", rel, e))
    }

    /// Delete `rel`; absent is fine. Serialised with local updates of the same record.
    pub(crate) async fn delete(&self, rel: &str) -> Result<()> {
        let _lock = match self.kind {
            Kind::Local { .. } => Some(self.lock(rel).await?),
            Kind::S3 => None,
        };
        match self.inner.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", rel, e)),
        }
    }

    /// Every object under the folder `rel_dir` (recursively), with keys relative to the
    /// layout folder.
    pub(crate) async fn list(&self, rel_dir: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = self.key(rel_dir);
        let mut stream = self.inner.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.err("listing", rel_dir, e))?;
            out.push((self.rel(&meta.location).to_string(), meta));
        }
        Ok(out)
    }

    /// The immediate sub-folders of `rel_dir`.
    pub(crate) async fn list_dirs(&self, rel_dir: &str) -> Result<Vec<String>> {
        let prefix = self.key(rel_dir);
        let res = self
            .inner
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.err("listing", rel_dir, e))?;
        Ok(res
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Start a streamed upload to `rel`; nothing is visible until it completes.
    pub(crate) async fn put_multipart(
        &self,
        rel: &str,
    ) -> Result<Box<dyn object_store::MultipartUpload>> {
        self.inner
            .put_multipart(&self.key(rel))
            .await
            .map_err(|e| self.err("starting upload of", rel, e))
    }

    pub(crate) fn wrap(&self, op: &'static str, rel: &str, e: object_store::Error) -> Error {
        self.err(op, rel, e)
    }

    /// Local backend: delete staging files (`<key>#<n>`) that a killed writer left
    /// behind and that were last touched more than `older_than` ago. Returns how many
    /// files and bytes were removed. Readers never see these files; they only take
    /// space. On S3 an interrupted multipart upload is invisible too and is removed by
    /// the bucket's `AbortIncompleteMultipartUpload` lifecycle rule, so this is a no-op.
    pub(crate) async fn clean_staging(&self, older_than: Duration) -> Result<(usize, u64)> {
        let Kind::Local { root } = &self.kind else {
            return Ok((0, 0));
        };
        let dir = root.join(LAYOUT);
        tokio::task::spawn_blocking(move || clean_staging_in(&dir, older_than))
            .await
            .expect("cleanup task panicked")
    }

    /// Take the local advisory lock guarding read-compare-write of `rel`.
    async fn lock(&self, rel: &str) -> Result<LocalLock> {
        let Kind::Local { root } = &self.kind else {
            unreachable!("locks are only used by the local backend")
        };
        let path = root
            .join(LAYOUT)
            .join("locks")
            .join(format!("{}.lock", rel.replace('/', "__")));
        tokio::task::spawn_blocking(move || LocalLock::acquire(path))
            .await
            .expect("lock task panicked")
    }
}

/// Holds an exclusive `flock`; dropping the file releases it (as does the process dying).
struct LocalLock {
    _file: std::fs::File,
}

impl LocalLock {
    fn acquire(path: PathBuf) -> Result<Self> {
        let io_err = |op, source| Error::Io {
            op,
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("creating lock folder", e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("opening lock file", e))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", e.into()))?;
        Ok(LocalLock { _file: file })
    }
}

fn is_staging_file(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn clean_staging_in(dir: &std::path::Path, older_than: Duration) -> Result<(usize, u64)> {
    let io_err = |op, path: &std::path::Path, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut removed = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io_err("listing", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &dir, e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| io_err("inspecting", &path, e))?;
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age >= older_than);
            if stale && is_staging_file(&entry.file_name().to_string_lossy()) {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        removed.0 += 1;
                        removed.1 += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("removing", &path, e)),
                }
            }
        }
    }
    Ok(removed)
}

fn check_credentials(url: &RegistryUrl, builder: &AmazonS3Builder) -> Result<()> {
    let has = |k: AmazonS3ConfigKey| builder.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let key = has(AmazonS3ConfigKey::AccessKeyId);
    let secret = has(AmazonS3ConfigKey::SecretAccessKey);
    let other_source = has(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || has(AmazonS3ConfigKey::ContainerCredentialsFullUri)
        || builder
            .get_config_value(&AmazonS3ConfigKey::SkipSignature)
            .is_some_and(|v| v == "true")
        || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
        || std::env::var_os(INSTANCE_CREDENTIALS_VAR).is_some_and(|v| v == "1");
    let reason = match (key, secret) {
        (true, true) => return Ok(()),
        _ if other_source => return Ok(()),
        (true, false) => "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
        (false, true) => "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
        (false, false) => {
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run with a web-identity or container role; set PREDICT_BUY_S3_INSTANCE_CREDENTIALS=1 to use the EC2 instance role)"
        }
    };
    Err(Error::MissingCredentials {
        url: url.to_string(),
        reason: reason.to_string(),
    })
}

/// Set to `1` to let an `s3://` registry fall back to EC2 instance-metadata
/// credentials (off by default: probing the metadata endpoint off EC2 only hangs).
pub const INSTANCE_CREDENTIALS_VAR: &str = "PREDICT_BUY_S3_INSTANCE_CREDENTIALS";
