//! Shared test setup: small trained models, artifacts on disk, and a real server on an
//! ephemeral port.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use predict_buy_model::{Model, TrainConfig, TrainRequest};
use predict_buy_serve::{AppState, Limits, ModelSource};
use serde_json::{Value, json};

/// How long a test waits for something that should happen promptly. Generous, because
/// these tests share two cores with whole builds: a condition that never comes fails
/// the test, one that comes late only slows it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives a value, or panics naming `what` after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A model trained on synthetic data; `seed` changes the data so two seeds give two
/// different artifacts.
pub fn train(seed: u64, trees: usize) -> Model {
    let mut train_csv = Vec::new();
    let mut test_csv = Vec::new();
    predict_buy_data::synth::write_split(seed, 5_000, 0.2, &mut train_csv, &mut test_csv)
        .expect("synthetic data");
    let table = predict_buy_data::Table::from_reader(train_csv.as_slice(), "train.csv")
        .expect("synthetic CSV parses");
    let yaml = predict_buy_model::DEFAULT_CONFIG_YAML
        .replace("n_estimators: 100", &format!("n_estimators: {trees}"));
    let config: TrainConfig = serde_yaml_ng::from_str(&yaml).expect("default config");
    predict_buy_model::train(
        &TrainRequest {
            config: &config,
            train: &table,
            test: None,
            data_digest: None,
            trained_at: "2026-01-01T00:00:00Z".into(),
            tool_version: "test".into(),
            git_commit: None,
        },
        &predict_buy_model::Quiet,
    )
    .expect("training succeeds")
    .model
}

/// Artifact bytes of model A and model B (different data), trained once per process.
pub fn artifacts() -> &'static (Vec<u8>, Vec<u8>) {
    static MODELS: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    MODELS.get_or_init(|| (train(7, 10).to_bytes(), train(8, 10).to_bytes()))
}

pub fn model_a() -> Model {
    Model::from_bytes(&artifacts().0).unwrap()
}

/// An artifact that loads (valid checksum) but whose golden rows do not match its
/// trees, so its self-check fails.
pub fn self_check_failing_artifact() -> Vec<u8> {
    use sha2::Digest as _;
    let mut payload = model_a().payload().clone();
    assert!(!payload.golden.is_empty(), "the model records golden rows");
    payload.golden[0].probability = 0.123_456_789;
    let json = serde_json::to_vec(&payload).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(predict_buy_model::MAGIC);
    out.extend_from_slice(&predict_buy_model::FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Writes through a temp file and a rename, as a deploy would.
pub fn write_model(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A request the original API took, from its sample requests.
pub fn sample_row() -> Value {
    json!({"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,
           "Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4})
}

pub const TOKEN: &str = "test-admin-token";

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub model_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub struct Options {
    pub limits: Limits,
    pub token: Option<String>,
    /// Write model A before starting (else no file: not ready).
    pub with_model: bool,
}

/// The default limits, but no drain on stop: a test that stops its server does not
/// wait for a load balancer that is not there. Tests of the drain set their own.
pub fn test_limits() -> Limits {
    Limits {
        drain: Duration::ZERO,
        ..Limits::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: test_limits(),
            token: Some(TOKEN.to_string()),
            with_model: true,
        }
    }
}

impl TestServer {
    /// A real server on 127.0.0.1:0 serving model A from a file.
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model_path = dir.path().join("model.pbm");
        if options.with_model {
            write_model(&model_path, &artifacts().0);
        }
        let state = AppState::new(
            ModelSource::File(model_path.clone()),
            options.limits,
            options.token,
        );
        if options.with_model {
            state.reload(true).await.expect("model A loads");
        }
        Self::serve(state, dir, model_path).await
    }

    /// Serves an already built state.
    pub async fn serve(state: AppState, dir: tempfile::TempDir, model_path: PathBuf) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(predict_buy_serve::serve(
            listener,
            state.clone(),
            Duration::from_millis(50),
            async move {
                let _ = rx.await;
            },
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Self {
            addr,
            state,
            client,
            dir,
            model_path,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, "application/json", serde_json::to_vec(body).unwrap())
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn reload(&self, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.post(self.url("/admin/reload"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Stops accepting and waits for requests in flight to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// The field names in a 422 body's `detail`.
pub fn fields(body: &Value) -> Vec<String> {
    body["detail"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|p| p["field"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends raw bytes and reads the answer until the server closes the connection.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    // A reset after the answer (the server refusing the rest of a body) still leaves
    // the answer in `out`; callers assert on what arrived.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A `/predict` held open by the test: its headers and the start of its body are sent,
/// the rest only when the test says. While held, it occupies a place under the
/// concurrency limit, so the test, not a timing window, decides how long it is in flight.
pub struct HeldPredict {
    stream: tokio::net::TcpStream,
}

const HELD_LENGTH: usize = 200;
const HELD_START: &[u8] = b"{\"Age\":";

impl HeldPredict {
    pub async fn start(addr: SocketAddr) -> Self {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {HELD_LENGTH}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(HELD_START).await.unwrap();
        Self { stream }
    }

    /// Sends the rest of the body (the sample row, padded to the announced length)
    /// and returns the status line of the answer.
    pub async fn finish(mut self) -> String {
        use tokio::io::AsyncWriteExt as _;
        let mut rest = b"46,\"Gender\":\"Female\",\"HasDrivingLicense\":1,\"RegionID\":21,\"Switch\":0,\"PastAccident\":\"Yes\",\"AnnualPremium\":2305.4}".to_vec();
        rest.resize(HELD_LENGTH - HELD_START.len(), b' ');
        self.stream.write_all(&rest).await.unwrap();
        self.status().await
    }

    /// The status line of the answer, waiting for it up to [`PATIENCE`].
    pub async fn status(&mut self) -> String {
        read_status(&mut self.stream).await
    }
}

/// The first line of the next answer on `stream`, waiting for it up to [`PATIENCE`].
pub async fn read_status(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
