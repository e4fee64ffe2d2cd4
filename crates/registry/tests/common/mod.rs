//! Shared test context: a registry on a temp folder, or on a real S3-compatible server
//! (s3s + s3s-fs) listening on 127.0.0.1 over HTTP, started in-process.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use predict_buy_registry::{Digest, Registry, RegistryOptions, RegistryUrl, S3Options};
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "predict-buy-test";
pub const SECRET_KEY: &str = "predict-buy-test-secret";
pub const BUCKET: &str = "models";
pub const PREFIX: &str = "team/registry";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    S3,
}

/// A running S3-compatible server storing objects under `root/<bucket>/<key>`.
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Server {
    pub async fn start(root: PathBuf) -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(&root).unwrap();
        let mut builder = S3ServiceBuilder::new(WithUploadList {
            fs,
            uploads: Default::default(),
        });
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        // s3s-fs is not atomic where S3 is. A conditional PUT checks `If-Match` and
        // then writes, in two steps; and a GET opens the object and only then reads its
        // ETag, so a GET racing a PUT can return the old body with the new ETag (a
        // writer holding both then overwrites the PUT it never saw). Writes therefore
        // exclude each other and reads, as S3's single atomic step does, so races in
        // the registry's code, not the test server's, are what the concurrency tests
        // see. (A GET's body streams from the file it opened, which a PUT replaces by
        // rename, so holding the lock until the response head is enough.)
        let lock = Arc::new(tokio::sync::RwLock::new(()));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let lock = lock.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        let lock = lock.clone();
                        async move {
                            let reads =
                                matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD);
                            let (_read, _write) = if reads {
                                (Some(lock.read_owned().await), None)
                            } else {
                                (None, Some(lock.write_owned().await))
                            };
                            hyper::service::Service::call(&service, req).await
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        S3Server {
            endpoint,
            root,
            task,
        }
    }
}

/// s3s-fs plus `ListMultipartUploads`, which it does not implement and which the
/// registry's sweep of interrupted uploads calls. Every other call goes to s3s-fs as
/// is; the server remembers the uploads it started and forgets those completed or
/// aborted, so the listing is what a real S3 would answer. (s3s-fs keeps an upload's
/// parts as `.upload_id-<id>.part-<n>` files in its root until then.)
struct WithUploadList {
    fs: s3s_fs::FileSystem,
    uploads: std::sync::Mutex<
        std::collections::BTreeMap<String, (String, String, std::time::SystemTime)>,
    >,
}

type S3Out<T> = s3s::S3Result<s3s::S3Response<T>>;

#[async_trait::async_trait]
impl s3s::S3 for WithUploadList {
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> S3Out<s3s::dto::GetObjectOutput> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: s3s::S3Request<s3s::dto::HeadObjectInput>,
    ) -> S3Out<s3s::dto::HeadObjectOutput> {
        self.fs.head_object(req).await
    }

    async fn put_object(
        &self,
        req: s3s::S3Request<s3s::dto::PutObjectInput>,
    ) -> S3Out<s3s::dto::PutObjectOutput> {
        self.fs.put_object(req).await
    }

    async fn copy_object(
        &self,
        req: s3s::S3Request<s3s::dto::CopyObjectInput>,
    ) -> S3Out<s3s::dto::CopyObjectOutput> {
        self.fs.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectInput>,
    ) -> S3Out<s3s::dto::DeleteObjectOutput> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: s3s::S3Request<s3s::dto::DeleteObjectsInput>,
    ) -> S3Out<s3s::dto::DeleteObjectsOutput> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsInput>,
    ) -> S3Out<s3s::dto::ListObjectsOutput> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: s3s::S3Request<s3s::dto::ListObjectsV2Input>,
    ) -> S3Out<s3s::dto::ListObjectsV2Output> {
        self.fs.list_objects_v2(req).await
    }

    async fn head_bucket(
        &self,
        req: s3s::S3Request<s3s::dto::HeadBucketInput>,
    ) -> S3Out<s3s::dto::HeadBucketOutput> {
        self.fs.head_bucket(req).await
    }

    async fn upload_part(
        &self,
        req: s3s::S3Request<s3s::dto::UploadPartInput>,
    ) -> S3Out<s3s::dto::UploadPartOutput> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(
        &self,
        req: s3s::S3Request<s3s::dto::ListPartsInput>,
    ) -> S3Out<s3s::dto::ListPartsOutput> {
        self.fs.list_parts(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CreateMultipartUploadInput>,
    ) -> S3Out<s3s::dto::CreateMultipartUploadOutput> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let res = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &res.output.upload_id {
            let started = std::time::SystemTime::now();
            self.uploads
                .lock()
                .unwrap()
                .insert(id.clone(), (bucket, key, started));
        }
        Ok(res)
    }

    async fn complete_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::CompleteMultipartUploadInput>,
    ) -> S3Out<s3s::dto::CompleteMultipartUploadOutput> {
        let id = req.input.upload_id.clone();
        let res = self.fs.complete_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(res)
    }

    async fn abort_multipart_upload(
        &self,
        req: s3s::S3Request<s3s::dto::AbortMultipartUploadInput>,
    ) -> S3Out<s3s::dto::AbortMultipartUploadOutput> {
        let id = req.input.upload_id.clone();
        let res = self.fs.abort_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(res)
    }

    async fn list_multipart_uploads(
        &self,
        req: s3s::S3Request<s3s::dto::ListMultipartUploadsInput>,
    ) -> S3Out<s3s::dto::ListMultipartUploadsOutput> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut uploads: Vec<s3s::dto::MultipartUpload> = self
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (bucket, key, _))| *bucket == input.bucket && key.starts_with(&prefix))
            .map(|(id, (_, key, started))| s3s::dto::MultipartUpload {
                key: Some(key.clone()),
                upload_id: Some(id.clone()),
                initiated: Some(s3s::dto::Timestamp::from(*started)),
                ..Default::default()
            })
            .collect();
        uploads.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(s3s::S3Response::new(s3s::dto::ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

pub fn s3_options(endpoint: &str) -> RegistryOptions {
    RegistryOptions {
        s3: S3Options {
            endpoint: Some(endpoint.to_string()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            ..S3Options::default()
        },
    }
}

/// One registry under test, on either backend.
pub struct Fixture {
    pub backend: Backend,
    pub url: RegistryUrl,
    pub options: RegistryOptions,
    pub registry: Registry,
    pub s3: Option<S3Server>,
    /// The folder holding the bytes: the registry root, or the S3 server's root.
    pub dir: TempDir,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (url, options, s3) = match backend {
            Backend::File => {
                let url =
                    RegistryUrl::parse(&format!("file://{}", dir.path().join("reg").display()))
                        .unwrap();
                (url, RegistryOptions::default(), None)
            }
            Backend::S3 => {
                let server = S3Server::start(dir.path().to_path_buf()).await;
                let url = RegistryUrl::parse(&format!("s3://{BUCKET}/{PREFIX}")).unwrap();
                (url, s3_options(&server.endpoint), Some(server))
            }
        };
        let registry = Registry::open_with(&url, &options).unwrap();
        Fixture {
            backend,
            url,
            options,
            registry,
            s3,
            dir,
        }
    }

    /// Another client on the same registry, as a second process would have.
    pub fn client(&self) -> Registry {
        Registry::open_with(&self.url, &self.options).unwrap()
    }

    /// Where an object's bytes live on disk, whichever the backend.
    pub fn object_file(&self, digest: &Digest) -> PathBuf {
        self.key_file(&format!("objects/sha256/{}", digest.hex()))
    }

    /// Where the record at `rel` (relative to `registry-v1/`) lives on disk.
    pub fn key_file(&self, rel: &str) -> PathBuf {
        let key = format!("registry-v1/{rel}");
        match self.backend {
            Backend::File => self.dir.path().join("reg").join(key),
            Backend::S3 => self.dir.path().join(BUCKET).join(PREFIX).join(key),
        }
    }

    /// Leftovers of interrupted writes as the backend's own storage shows them, found
    /// without the registry's help: staging files `<key>#<n>` under a `file://`
    /// registry; for S3 the files s3s-fs keeps for an unfinished multipart upload in
    /// its root (`.upload-<id>.json` and `.upload_id-<id>.part-<n>`).
    pub fn staging_files_on_disk(&self) -> Vec<PathBuf> {
        let (dir, is_staging): (PathBuf, fn(&str) -> bool) = match self.backend {
            Backend::File => (self.dir.path().join("reg"), |name| name.contains('#')),
            Backend::S3 => (self.dir.path().to_path_buf(), |name| {
                name.starts_with(".upload_id-")
                    || (name.starts_with(".upload-") && name.ends_with(".json"))
            }),
        };
        walk(&dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| is_staging(&n.to_string_lossy()))
            })
            .collect()
    }

    /// Environment variables that let a child process open this same registry.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PREDICT_BUY_TEST_REGISTRY_URL", self.url.to_string())];
        if let Some(s3) = &self.s3 {
            env.push(("PREDICT_BUY_TEST_S3_ENDPOINT", s3.endpoint.clone()));
        }
        env
    }

    /// Open the registry described by [`Fixture::child_env`] (in the child process).
    pub fn open_from_child_env() -> Option<Registry> {
        let url = std::env::var("PREDICT_BUY_TEST_REGISTRY_URL").ok()?;
        let url = RegistryUrl::parse(&url).unwrap();
        let options = match std::env::var("PREDICT_BUY_TEST_S3_ENDPOINT") {
            Ok(endpoint) => s3_options(&endpoint),
            Err(_) => RegistryOptions::default(),
        };
        Some(Registry::open_with(&url, &options).unwrap())
    }
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after
/// `deadline`. Deadlines are generous: they bound a hang, they do not time anything.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + deadline;
    while !condition().await {
        assert!(
            std::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub const SHORT: Duration = Duration::from_millis(300);
