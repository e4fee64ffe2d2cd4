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
use jiff::Timestamp;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::gc::{InterruptedWrite, Leftover};
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

/// Whether opening a registry may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Writers: a `file://` folder is created if missing.
    IfMissing,
    /// Readers: a missing `file://` folder is [`Error::NoRegistry`], and nothing is
    /// created on disk.
    Never,
}

#[derive(Debug)]
enum Kind {
    Local { root: PathBuf },
    S3(Box<S3Extra>),
}

/// What the S3 backend needs beyond `ObjectStore`: listing and aborting multipart
/// uploads, which object_store does not offer through its generic interface.
#[derive(Debug)]
struct S3Extra {
    s3: AmazonS3,
    http: HttpClient,
    /// `https://host/bucket` (path style) or `https://bucket.host` (virtual hosted).
    bucket_url: String,
    region: String,
    bucket: String,
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
    pub(crate) fn open(
        url: &RegistryUrl,
        options: &RegistryOptions,
        create: Create,
    ) -> Result<Self> {
        match url {
            RegistryUrl::File { root } => Self::open_local(url, root, create),
            RegistryUrl::S3 { bucket, prefix } => Self::open_s3(url, bucket, prefix, &options.s3),
        }
    }

    fn open_local(url: &RegistryUrl, root: &std::path::Path, create: Create) -> Result<Self> {
        let io_err = |op, source| Error::Io {
            op,
            path: root.to_path_buf(),
            source,
        };
        let layout = root.join(LAYOUT);
        match create {
            Create::IfMissing => std::fs::create_dir_all(&layout)
                .map_err(|e| io_err("creating registry folder", e))?,
            Create::Never if !layout.is_dir() => {
                return Err(Error::NoRegistry {
                    registry: url.to_string(),
                    reason: format!("there is no folder `{}`", absolute(&layout).display()),
                });
            }
            Create::Never => {}
        }
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
            // object_store panics on an endpoint that is not an absolute URL (an empty
            // AWS_ENDPOINT_URL, say), so it is checked here first.
            check_endpoint(url, endpoint)?;
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
        let region = builder
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".to_string());
        // The same URL object_store itself uses: path style unless asked otherwise.
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v == "true");
        let bucket_url = match (&endpoint, virtual_hosted) {
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let client_options = ClientOptions::new()
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            )
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout);
        let open_err = |source| Error::Open {
            url: url.to_string(),
            source: Box::new(source),
        };
        let http = ReqwestConnector::default()
            .connect(&client_options)
            .map_err(open_err)?;
        let s3 = builder.build().map_err(open_err)?;
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
            inner: Arc::new(s3.clone()),
            base,
            kind: Kind::S3(Box::new(S3Extra {
                s3,
                http,
                bucket_url,
                region,
                bucket: bucket.to_string(),
            })),
            label,
        })
    }

    /// The layout folder's key prefix, e.g. `team/registry/registry-v1`.
    pub(crate) fn layout_prefix(&self) -> &str {
        &self.base
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
            Kind::S3(_) => None,
        }
    }

    /// True when anything of the registry layout exists: on disk its folder, on S3 at
    /// least one object under `<prefix>/registry-v1/`.
    pub(crate) async fn exists(&self) -> Result<bool> {
        match &self.kind {
            Kind::Local { root } => Ok(root.join(LAYOUT).is_dir()),
            Kind::S3(_) => {
                let prefix = Path::from(self.base.as_str());
                let mut stream = self.inner.list(Some(&prefix));
                match stream.next().await {
                    None => Ok(false),
                    Some(Ok(_)) => Ok(true),
                    Some(Err(e)) => Err(self.err("listing", "", e)),
                }
            }
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
            Kind::S3(_) => {
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
            Kind::S3(_) => None,
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

    /// Every leftover of an interrupted write: staging files `<key>#<n>` on disk, or
    /// multipart uploads never completed nor aborted on S3. Readers never see these;
    /// they only take space (and, on S3, cost money).
    pub(crate) async fn list_staging(&self) -> Result<Vec<InterruptedWrite>> {
        match &self.kind {
            Kind::Local { root } => {
                let dir = root.join(LAYOUT);
                tokio::task::spawn_blocking(move || list_staging_in(&dir))
                    .await
                    .map_err(|e| Error::Io {
                        op: "listing staging files in",
                        path: root.join(LAYOUT),
                        source: std::io::Error::other(e),
                    })?
            }
            Kind::S3(extra) => self.list_uploads(extra).await,
        }
    }

    /// Remove one leftover if it is still at least `min_age` old. True when it was
    /// removed; false when it had gone already or showed fresh activity (a writer
    /// still owns it).
    pub(crate) async fn remove_staging(
        &self,
        write: &InterruptedWrite,
        min_age: Duration,
    ) -> Result<bool> {
        match (&write.leftover, &self.kind) {
            (Leftover::File { path }, Kind::Local { .. }) => {
                let path = path.clone();
                let shown = path.clone();
                tokio::task::spawn_blocking(move || remove_if_stale(&path, min_age))
                    .await
                    .map_err(|e| Error::Io {
                        op: "removing",
                        path: shown,
                        source: std::io::Error::other(e),
                    })?
            }
            (Leftover::Upload { key, upload_id }, Kind::S3(extra)) => {
                // An upload's only timestamp is when it started, which does not move, so
                // the age checked when listing still holds.
                let path = Path::from(key.as_str());
                match extra.s3.abort_multipart(&path, upload_id).await {
                    Ok(()) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.err("aborting upload of", self.rel(&path), e)),
                }
            }
            _ => Err(Error::InvalidRecord {
                object: write.target.clone(),
                reason: "this leftover belongs to another kind of registry".to_string(),
            }),
        }
    }

    /// S3 `ListMultipartUploads` under the layout prefix, every page.
    async fn list_uploads(&self, extra: &S3Extra) -> Result<Vec<InterruptedWrite>> {
        let prefix = format!("{}/", self.base);
        let generic = |source: Box<dyn std::error::Error + Send + Sync>| {
            self.err(
                "listing interrupted uploads under",
                "",
                object_store::Error::Generic {
                    store: "S3",
                    source,
                },
            )
        };
        let credential = extra
            .s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.err("authenticating to list uploads under", "", e))?;
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("prefix={}&uploads=", uri_encode(&prefix));
            if let Some((key, upload)) = &markers {
                query = format!(
                    "key-marker={}&{query}&upload-id-marker={}",
                    uri_encode(key),
                    uri_encode(upload)
                );
            }
            let uri = format!("{}/?{query}", extra.bucket_url);
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(&uri)
                .body(HttpRequestBody::from(Vec::new()))
                .map_err(|e| generic(Box::new(e)))?;
            AwsAuthorizer::new(&credential, "s3", &extra.region)
                .try_authorize(&mut request, None)
                .map_err(|e| self.err("signing the upload listing under", "", e))?;
            let response = extra
                .http
                .execute(request)
                .await
                .map_err(|e| generic(Box::new(e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .bytes()
                .await
                .map_err(|e| generic(Box::new(e)))?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(generic(
                    format!(
                        "ListMultipartUploads on bucket `{}` answered {status}: {text}",
                        extra.bucket
                    )
                    .into(),
                ));
            }
            let page: ListUploadsPage =
                quick_xml::de::from_reader(body.as_ref()).map_err(|e| generic(Box::new(e)))?;
            for upload in page.uploads {
                let Some(rel) = upload.key.strip_prefix(&prefix) else {
                    continue;
                };
                let last_activity = upload
                    .initiated
                    .parse::<Timestamp>()
                    .map_err(|e| generic(Box::new(e)))?;
                out.push(InterruptedWrite {
                    target: format!("{LAYOUT}/{rel}"),
                    size: None,
                    last_activity,
                    leftover: Leftover::Upload {
                        key: upload.key,
                        upload_id: upload.upload_id,
                    },
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(k), Some(u)) => markers = Some((k, u)),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(out)
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

/// One page of an S3 `ListMultipartUploads` answer: only what the sweep needs.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploadsPage {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
    initiated: String,
}

/// Percent-encoding of a query value as SigV4 wants it: only unreserved characters
/// stay as they are (so `/` becomes `%2F`).
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn list_staging_in(layout: &std::path::Path) -> Result<Vec<InterruptedWrite>> {
    let io_err = |op, path: &std::path::Path, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    let mut pending = vec![layout.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // A folder removed while we walk (or a registry never written) has nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", &dir, e))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                // Renamed into place by its writer since we listed the folder.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("inspecting", &path, e)),
            };
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_staging_file(&name) {
                continue;
            }
            let Ok(rel) = path.strip_prefix(layout) else {
                continue;
            };
            let rel = rel.to_string_lossy();
            let target = rel.rsplit_once('#').map_or(&*rel, |(key, _)| key);
            out.push(InterruptedWrite {
                target: format!("{LAYOUT}/{target}"),
                size: Some(meta.len()),
                last_activity: modified(&meta),
                leftover: Leftover::File { path },
            });
        }
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

fn modified(meta: &std::fs::Metadata) -> Timestamp {
    meta.modified()
        .ok()
        .and_then(|m| Timestamp::try_from(m).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Removes a staging file only if nothing touched it for `min_age`: a writer still
/// streaming into it keeps moving its modification time.
fn remove_if_stale(path: &std::path::Path, min_age: Duration) -> Result<bool> {
    let io_err = |op, source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("inspecting", e)),
    };
    let stale = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age >= min_age);
    if !stale {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", e)),
    }
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

/// An S3 endpoint must be an absolute `http://` or `https://` URL with a host.
fn check_endpoint(url: &RegistryUrl, endpoint: &str) -> Result<()> {
    let uri: Option<http::Uri> = endpoint.parse().ok();
    let scheme_ok = uri
        .as_ref()
        .and_then(|u| u.scheme_str())
        .is_some_and(|s| s == "http" || s == "https");
    let host_ok = uri
        .as_ref()
        .and_then(|u| u.host())
        .is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok {
        return Ok(());
    }
    Err(Error::InvalidUrl {
        url: url.to_string(),
        reason: format!(
            "the S3 endpoint `{endpoint}` (AWS_ENDPOINT_URL or the registry's endpoint \
             setting) is not an absolute http:// or https:// URL"
        ),
    })
}
