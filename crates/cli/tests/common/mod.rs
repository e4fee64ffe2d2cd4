//! Shared helpers for the CLI's integration tests: a scratch project folder per test,
//! running the built `predict-buy` binary in it, and small trained models (trained once
//! per test binary through the CLI itself).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The finished run of one command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\n{self}");
        self
    }

    /// Panics with both streams unless the command exited with `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "expected exit code {code}\n{self}");
        self
    }

    /// Stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A scratch folder outside any git repository that commands run in. Its default
/// registry is `<dir>/.predict-buy/registry`; nothing from the caller's environment
/// (`PREDICT_BUY_REGISTRY`, a `predict-buy.yaml` or git repository above) leaks in.
pub struct TestContext {
    dir: TempDir,
    envs: Vec<(String, String)>,
}

impl TestContext {
    pub fn new() -> Self {
        TestContext {
            dir: tempfile::Builder::new()
                .prefix("predict-buy-test")
                .tempdir()
                .expect("temp dir"),
            envs: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The default registry's folder.
    pub fn registry_dir(&self) -> PathBuf {
        self.path().join(".predict-buy/registry")
    }

    /// Where the default registry keeps the artifact with this `sha256:<hex>` digest.
    pub fn object_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.registry_dir()
            .join("registry-v1/objects/sha256")
            .join(hex)
    }

    /// Sets an environment variable for every later command.
    pub fn env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// The binary, set up to run in the scratch folder.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_predict-buy"));
        cmd.current_dir(self.path())
            .env_remove("PREDICT_BUY_REGISTRY")
            .env_remove("PREDICT_BUY_LOG")
            .env_remove("GITHUB_ACTOR")
            .env("USER", "tester")
            // The shared models train on plain files, as tests written before data
            // versioning do; tests of data versioning set this back to `false`.
            .env("PREDICT_BUY_ALLOW_UNVERSIONED_DATA", "true")
            // git must not find a repository above the scratch folder.
            .env(
                "GIT_CEILING_DIRECTORIES",
                self.path().parent().unwrap_or(self.path()),
            );
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `predict-buy ARGS…` in the scratch folder.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_in(self.path(), args)
    }

    /// Runs `predict-buy ARGS…` in `dir`.
    pub fn run_in<I, S>(&self, dir: &Path, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self
            .command()
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run predict-buy");
        Run::from(out)
    }

    /// Pushes an artifact to the default registry and returns its digest.
    #[track_caller]
    pub fn push(&self, artifact: &Path) -> String {
        let run = self
            .run([
                OsStr::new("model"),
                OsStr::new("push"),
                artifact.as_os_str(),
            ])
            .ok();
        run.stdout.trim().to_string()
    }
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Two small, different models trained once per test binary through the CLI.
pub struct Models {
    _dir: TempDir,
    pub a: PathBuf,
    pub b: PathBuf,
}

/// The shared trained models (`a` and `b` differ in tree count, so in content).
pub fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(train_models)
}

fn train_models() -> Models {
    let ctx = TestContext::new();
    ctx.run([
        "data", "synth", "--rows", "3000", "--seed", "7", "--out", "data",
    ])
    .ok();
    let mut paths = Vec::new();
    for (name, trees) in [("a", 5), ("b", 8)] {
        let config = ctx.path().join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "data:\n  train_path: data/train.csv\n  test_path: data/test.csv\n\
                 train:\n  test_size: 0.2\n  random_state: 1\n\
                 model:\n  name: GradientBoostingClassifier\n  \
                 params: {{n_estimators: {trees}, max_depth: 3, random_state: 1}}\n  \
                 store_path: models\n"
            ),
        )
        .expect("write config");
        let out = ctx.path().join(format!("models/{name}.pbm"));
        ctx.run([
            OsStr::new("train"),
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
        ])
        .ok();
        paths.push(out);
    }
    let b = paths.pop().expect("two models");
    let a = paths.pop().expect("two models");
    Models {
        _dir: ctx.dir,
        a,
        b,
    }
}

/// `sha256:<hex>` of a file, computed independently of the registry.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("read file");
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

/// insta settings that hide what differs between runs and machines: the scratch
/// folder, digests, times, durations, ports and pids. Numbers the model computes
/// stay: training is deterministic, and a change there should show in review.
pub fn insta_settings(ctx: &TestContext) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    for dir in [
        ctx.path().to_path_buf(),
        ctx.path()
            .canonicalize()
            .unwrap_or_else(|_| ctx.path().into()),
    ] {
        s.add_filter(&regex::escape(&dir.display().to_string()), "[DIR]");
    }
    s.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    s.add_filter(r"model [0-9a-f]{12}\b", "model [SHORT-DIGEST]");
    s.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[TIME]",
    );
    s.add_filter(
        r#""fit_seconds": [0-9.e-]+"#,
        r#""fit_seconds": "[SECONDS]""#,
    );
    s.add_filter(r"in \d+\.\d+s\b", "in [SECONDS]s");
    s.add_filter(r#""verify_ms": [0-9.e-]+"#, r#""verify_ms": "[MS]""#);
    s.add_filter(r"\b\d+ ms\b", "[MS] ms");
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"pid \d+", "pid [PID]");
    s.add_filter(
        r#""tool_version": "[^"]*""#,
        r#""tool_version": "[VERSION]""#,
    );
    s
}

/// A port that was free a moment ago, for commands that must be told a port (the
/// OS picks it; the window in which another process could take it is tiny).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

/// Leaves a staging file in the default registry as a writer killed mid-write does,
/// last written `age` ago.
pub fn leave_staging_file(ctx: &TestContext, name: &str, len: usize, age: std::time::Duration) {
    let path = ctx
        .registry_dir()
        .join("registry-v1/objects/sha256")
        .join(name);
    let file = std::fs::File::create(&path).expect("create a staging file");
    std::io::Write::write_all(&mut &file, &vec![7u8; len]).expect("write a staging file");
    file.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now() - age))
        .expect("age a staging file");
}

/// [`insta_settings`] plus what registry and deploy output adds: ages of leftovers
/// (they grow while the test runs) and lease expiry countdowns.
pub fn insta_settings_registry(ctx: &TestContext) -> insta::Settings {
    let mut s = insta_settings(ctx);
    s.add_filter(r"\b(\d+d \d+h|\d+h \d+m|\d+m \d+s|\d+s) old\b", "[AGE] old");
    s.add_filter(r#""age_seconds": \d+"#, r#""age_seconds": "[AGE]""#);
    // Artifacts record their training time, so their size can move by a byte.
    s.add_filter(r#""size": \d+"#, r#""size": "[SIZE]""#);
    s.add_filter(r"\(\d+ bytes\)", "([SIZE] bytes)");
    // Fractional milliseconds: the base filter already replaced the digits after the
    // point.
    s.add_filter(r"\b\d+\.\[MS\] ms\b", "[MS] ms");
    s.add_filter(
        r#"("http://127\.0\.0\.1:\[PORT\]/",\s+)[0-9.e-]+"#,
        "$1\"[MS]\"",
    );
    // The shared trained models live in another test's scratch folder.
    s.add_filter(
        &format!(
            r"{}/predict-buy-test[A-Za-z0-9_]+",
            regex::escape(&std::env::temp_dir().display().to_string())
        ),
        "[MODELS-DIR]",
    );
    // Artifacts record when they were trained, so their digests differ between runs;
    // tables show the first 12 hex digits.
    s.add_filter(r"(?m)^[0-9a-f]{12}\b", "[SHORT-DIGEST]");
    s.add_filter(r"\b(v\d+\.\d+\.\d+ +)[0-9a-f]{12}\b", "$1[SHORT-DIGEST]");
    // The size in `model show` and in `model list`'s SIZE column (see "size" above).
    s.add_filter(r"(?m)^(size +)\d+ bytes", "$1[SIZE] bytes");
    // (a right-aligned column: its padding moves with the digits, so it goes too)
    s.add_filter(r"(?m)^(\[SHORT-DIGEST\]) +\d+\b", "$1 [SIZE]");
    s
}

/// How long a condition polled for may take on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Wait until `done` gives a value, checking every 50 ms; panics with `what` after
/// [`PATIENCE`].
#[track_caller]
pub fn poll_for<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `done` holds; see [`poll_for`].
#[track_caller]
pub fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_for(what, || done().then_some(()))
}

/// A `predict-buy serve` process, killed on drop.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, as the server reported it.
    pub endpoint: String,
}

impl Server {
    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestContext {
    /// Start `predict-buy serve ARGS --addr 127.0.0.1:0` and read the port it bound from
    /// its line `predict-buy serve: listening on http://ADDR`: no window in which
    /// another process can take the port, as with bind-release-bind.
    pub fn spawn_server<I, S>(&self, args: I) -> Server
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .command()
            .arg("serve")
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start predict-buy serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps reading after the address so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(PATIENCE) {
            Ok(endpoint) => Server { child, endpoint },
            Err(e) => {
                let _ = child.kill();
                panic!("predict-buy serve never said where it listens: {e}");
            }
        }
    }

    /// A server following `env` of this context's registry, polling every `poll`.
    pub fn serve_env(&self, env: &str, poll: &str) -> Server {
        let registry = self.registry_dir();
        self.spawn_server([
            OsStr::new("--registry"),
            registry.as_os_str(),
            OsStr::new("--env"),
            OsStr::new(env),
            OsStr::new("--poll-interval"),
            OsStr::new(poll),
        ])
    }
}

/// A Kubernetes API simulator's pod runtime (the simulator stands in for a cluster,
/// which cannot run here): each pod runs `predict-buy serve` with its container's
/// arguments, on the address the simulator gives instead of `0.0.0.0:8080`, in the
/// project folder, logging to `pods/<pod>.log` there.
pub fn sim_serve_runtime(project: PathBuf) -> predict_buy_kube_sim::ProcessRuntime {
    const BIN: &str = env!("CARGO_BIN_EXE_predict-buy");
    predict_buy_kube_sim::ProcessRuntime::new(move |c, addr| {
        let mut args = c.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--addr") {
            if let Some(v) = args.get_mut(i + 1) {
                *v = addr.to_string();
            }
        } else {
            args.extend(["--addr".to_string(), addr.to_string()]);
        }
        let logs = project.join("pods");
        let log = std::fs::create_dir_all(&logs)
            .and_then(|()| std::fs::File::create(logs.join(format!("{}.log", c.pod))))
            .map_err(|source| predict_buy_kube_sim::RuntimeError::Spawn {
                program: BIN.into(),
                container: c.name.clone(),
                source,
            })?;
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("serve")
            .args(&args)
            .current_dir(&project)
            .env_remove("PREDICT_BUY_REGISTRY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        Ok(cmd)
    })
}
