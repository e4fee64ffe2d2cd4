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
        let mut builder = S3ServiceBuilder::new(fs);
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
