//! An open-loop load generator: requests go out on a fixed schedule, whatever the
//! server's pace, and each latency is counted from when its request was *due*, so a
//! stalled server is charged for every request it delayed (no coordinated omission,
//! as in wrk2). A closed-loop loader like wrk measures latency at saturation, which is
//! only connections / throughput; this measures it at a chosen rate below that.
//!
//! One blocking thread per connection, each sleeping until its next send time, keeps
//! the schedule at the kernel timer's precision (tens of microseconds) rather than
//! an async runtime's millisecond ticks.
//!
//! `cargo run --release -p predict-buy-serve --example open_loop -- 127.0.0.1:8091 RATE CONNECTIONS SECONDS`
//!
//! Prints one line: `rate_sent rate_answered p50_ms p90_ms p99_ms p999_ms max_ms errors
//! late_percent`. `late_percent` is the share of requests the loader itself sent over
//! a millisecond after they were due although their connection was free: above a
//! few percent the loader was short of CPU and the latencies describe it, not the
//! server.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SAMPLE: &str = r#"{"Gender":"Female","Age":46,"HasDrivingLicense":1,"RegionID":21.0,"Switch":0,"PastAccident":"Yes","AnnualPremium":2305.4}"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, rate, connections, seconds] = args.as_slice() else {
        eprintln!("usage: open_loop ADDR RATE CONNECTIONS SECONDS");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("RATE: requests per second");
    let connections: usize = connections.parse().expect("CONNECTIONS: a count");
    let seconds: f64 = seconds.parse().expect("SECONDS: a duration");
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{SAMPLE}",
        SAMPLE.len()
    );
    // Each connection sends every `connections / rate` seconds, the connections
    // staggered evenly, so together they send `rate` requests per second.
    let period = Duration::from_secs_f64(connections as f64 / rate);
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + warmup + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let addr = addr.clone();
            let request = request.clone();
            let first = start + period.mul_f64(i as f64 / connections as f64);
            std::thread::spawn(move || {
                connection(
                    &addr,
                    request.as_bytes(),
                    first,
                    period,
                    start + warmup,
                    end,
                )
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut sent = 0u64;
    let mut late = 0u64;
    for t in threads {
        let r = t.join().expect("a loader thread");
        latencies.extend(r.latencies_us);
        errors += r.errors;
        sent += r.sent;
        late += r.late;
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1000.0
    };
    println!(
        "{:.0} {:.0} {:.3} {:.3} {:.3} {:.3} {:.3} {} {:.2}",
        sent as f64 / seconds,
        latencies.len() as f64 / seconds,
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
        errors,
        100.0 * late as f64 / sent.max(1) as f64
    );
}

struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
    sent: u64,
    late: u64,
}

fn connection(
    addr: &str,
    request: &[u8],
    first: Instant,
    period: Duration,
    measure_from: Instant,
    end: Instant,
) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::new(),
        errors: 0,
        sent: 0,
        late: 0,
    };
    let mut stream = connect(addr);
    let mut buf = vec![0u8; 4096];
    let mut due = first;
    while due < end {
        let now = Instant::now();
        let free_in_time = due > now;
        if free_in_time {
            std::thread::sleep(due - now);
        }
        let woke = Instant::now();
        let ok = stream.write_all(request).is_ok() && read_response(&mut stream, &mut buf);
        let done = Instant::now();
        if due >= measure_from {
            out.sent += 1;
            if free_in_time && woke.duration_since(due) > Duration::from_millis(1) {
                out.late += 1;
            }
            if ok {
                let us = done.saturating_duration_since(due).as_micros();
                out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
            } else {
                out.errors += 1;
            }
        }
        if !ok {
            stream = connect(addr);
        }
        due += period;
    }
    out
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("the server accepts connections");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
}

/// Reads one response with a `content-length` body; `false` on anything else.
fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    let mut len = 0;
    loop {
        let Ok(n) = stream.read(&mut buf[len..]) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        len += n;
        let Some(head_end) = find(&buf[..len], b"\r\n\r\n") else {
            if len == buf.len() {
                return false;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return false;
        }
        let body: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let total = head_end + 4 + body;
        if total > buf.len() {
            return false;
        }
        while len < total {
            match stream.read(&mut buf[len..total]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => len += n,
            }
        }
        return true;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
