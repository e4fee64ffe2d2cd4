//! `predict-buy serve` as a process: it reports the address it bound, so it can start on
//! port 0 with no race for a port, and SIGTERM drains the requests in flight before it
//! exits 0.
//!
//! HTTP is spoken over plain `std::net` sockets: the test needs requests it can hold
//! half-sent, which a client library would not give it.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestContext, models};

/// How long to wait for something that should happen promptly; generous because the
/// machine may be busy building. Late only slows a test; never is a failure.
const PATIENCE: Duration = Duration::from_secs(60);

const LISTENING: &str = "predict-buy serve: listening on http://";

/// A running `predict-buy serve`, killed on drop if a test leaves it running.
struct Serve {
    child: Child,
    /// Stderr lines as they arrive, read by a thread so the pipe never fills.
    lines: mpsc::Receiver<String>,
    /// Every stderr line taken from `lines` so far, for failure messages.
    seen: Vec<String>,
    addr_file: PathBuf,
}

impl Serve {
    /// Starts serving model `a` on 127.0.0.1:0 with an address file; extra flags after.
    fn start(ctx: &TestContext, extra: &[&str]) -> Self {
        let addr_file = ctx.path().join("serve.addr");
        let mut child = ctx
            .command()
            .args(["serve", "--model"])
            .arg(&models().a)
            .args(["--addr", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start predict-buy serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            lines,
            seen: Vec::new(),
            addr_file,
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for a stderr line containing `needle` and returns it.
    #[track_caller]
    fn line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no stderr line with {needle:?} ({e}); stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The address from the stderr announcement, checked against the address file.
    #[track_caller]
    fn addr(&mut self) -> SocketAddr {
        let line = self.line(LISTENING);
        let announced: SocketAddr = line[line.find(LISTENING).unwrap() + LISTENING.len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{line:?} does not end in an address: {e}"));
        // Written before the announcement, so it is there by now, and whole.
        let text = std::fs::read_to_string(&self.addr_file).expect("the address file exists");
        assert!(text.ends_with('\n'), "one whole line: {text:?}");
        let written: SocketAddr = text.trim().parse().expect("the file holds an address");
        assert_eq!(written, announced);
        assert_ne!(announced.port(), 0, "a real port was bound");
        announced
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns how it did.
    #[track_caller]
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The rest of stderr, for the caller and for failure messages.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running {PATIENCE:?} later; stderr:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, body).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read the response head");
        assert!(
            n == 1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("read the body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut stream)
}

/// The value of an unlabelled Prometheus series.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

const HELD_LENGTH: usize = 200;
const HELD_START: &[u8] = br#"{"Age":"#;

/// A /predict whose headers and first body bytes are sent; the rest waits for
/// [`finish`], so the test decides how long the request stays in flight.
fn hold_predict(addr: SocketAddr) -> TcpStream {
    let mut stream = connect(addr);
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {HELD_LENGTH}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(HELD_START).unwrap();
    stream
}

/// Sends the rest of a held request's body and reads its answer.
fn finish(mut stream: TcpStream) -> (u16, String) {
    let mut rest = br#"46,"Gender":"Female","HasDrivingLicense":1,"RegionID":21,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}"#.to_vec();
    rest.resize(HELD_LENGTH - HELD_START.len(), b' ');
    stream
        .write_all(&rest)
        .expect("the server still reads the body");
    read_response(&mut stream)
}

#[test]
fn port_zero_reports_the_bound_address() {
    let ctx = TestContext::new();
    let mut serve = Serve::start(&ctx, &[]);
    let addr = serve.addr();
    let (status, body) = get(addr, "/");
    assert_eq!(status, 200, "{body}");
    let root: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(root["health_check"], "OK");
    assert_eq!(
        root["model_version"].as_str().map(str::len),
        Some(12),
        "{root}"
    );

    serve.signal("INT");
    let status = serve.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", serve.seen.join("\n"));
    assert!(
        serve.seen.iter().any(|l| l == "predict-buy serve: stopped"),
        "{:?}",
        serve.seen
    );
    assert!(
        !serve.addr_file.exists(),
        "a stopped server leaves no address to a port nobody listens on"
    );
}

#[test]
fn sigterm_drains_requests_in_flight_then_exits_0() {
    const HELD: usize = 3;
    let ctx = TestContext::new();
    // A request timeout far beyond the test's patience, so only the drain can end them.
    let mut serve = Serve::start(&ctx, &["--timeout", "300s"]);
    let addr = serve.addr();
    let (_, expected) = {
        let mut s = connect(addr);
        let row = br#"{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}"#;
        write!(
            s,
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            row.len()
        )
        .unwrap();
        s.write_all(row).unwrap();
        read_response(&mut s)
    };
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("a prediction");
    assert!(expected["probability"].is_number(), "{expected}");

    let held: Vec<TcpStream> = (0..HELD).map(|_| hold_predict(addr)).collect();
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = connect(addr);
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    // The held requests are inside the server once the gauge counts them and the
    // scrape that reads it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = get(addr, "/metrics");
        let in_flight = gauge(&metrics, "http_requests_in_flight");
        if in_flight.is_some_and(|n| n >= (HELD + 1) as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the held requests never reached the server: in flight {in_flight:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    serve.signal("TERM");
    serve.line("SIGTERM: shutting down, draining requests in flight");
    // It stops accepting...
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but does not exit while requests are in flight.
    assert!(
        serve.child.try_wait().expect("try_wait").is_none(),
        "exited with {HELD} requests in flight"
    );
    for (i, stream) in held.into_iter().enumerate() {
        let (status, body) = finish(stream);
        assert_eq!(status, 200, "held request {i}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("a prediction");
        assert_eq!(answer, expected, "held request {i}");
    }
    let status = serve.exit();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", serve.seen.join("\n"));
    assert!(
        serve.seen.iter().any(|l| l == "predict-buy serve: stopped"),
        "{:?}",
        serve.seen
    );
}

#[test]
fn a_taken_address_is_refused() {
    let ctx = TestContext::new();
    let mut first = Serve::start(&ctx, &[]);
    let addr = first.addr();
    let taken = addr.to_string();
    let run = ctx.run([
        std::ffi::OsStr::new("serve"),
        "--model".as_ref(),
        models().a.as_os_str(),
        "--addr".as_ref(),
        taken.as_ref(),
    ]);
    // Which failing code is the settings layer's call; that it fails, and says why, is ours.
    assert!(matches!(run.code, 1 | 2), "{run}");
    assert!(
        run.stderr.contains(&format!("cannot listen on {addr}")),
        "{run}"
    );
    // The first server is untouched.
    assert_eq!(get(addr, "/healthz").0, 200);
}
