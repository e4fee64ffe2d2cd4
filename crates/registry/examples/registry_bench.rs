//! Measures the registry's hot paths; the numbers go in `crates/registry/BENCH.md`.
//!
//! ```text
//! cargo run --release -p predict-buy-registry --example registry_bench -- releases 10000
//! cargo run --release -p predict-buy-registry --example registry_bench -- push-pull 50 file
//! cargo run --release -p predict-buy-registry --example registry_bench -- push-pull 50 s3
//! cargo run --release -p predict-buy-registry --example registry_bench -- push-pull 50 file stream-only
//! ```
//! Run under `/usr/bin/time -v` for the whole process's peak RSS (with `stream-only`,
//! which skips the in-memory `pull`); the example also prints the peak (VmHWM) after
//! each step.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{Backend, Fixture};
use predict_buy_registry::{ReleaseRecord, ReleaseTag};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["releases", n] => releases(n.parse().expect("a count")).await,
        ["push-pull", mb, backend] | ["push-pull", mb, backend, "stream-only"] => {
            let backend = match backend {
                "file" => Backend::File,
                "s3" => Backend::S3,
                other => panic!("unknown backend {other}"),
            };
            let in_memory = args.len() == 3;
            push_pull(mb.parse().expect("a size in MB"), backend, in_memory).await
        }
        _ => eprintln!("usage: registry_bench releases N | push-pull MB file|s3 [stream-only]"),
    }
}

async fn releases(n: u64) {
    let fx = Fixture::new(Backend::File).await;
    let reg = &fx.registry;
    let digest = reg
        .push_bytes(Bytes::from(common::bytes(1, 4096)))
        .await
        .unwrap()
        .digest;
    let started = Instant::now();
    for i in 0..n {
        let record = ReleaseRecord {
            tag: ReleaseTag::parse(&format!("v{}.{}.{}", i / 1000, (i / 10) % 100, i % 10))
                .unwrap(),
            model_digest: digest.clone(),
            image: Some("registry.example/predict-buy:bench".into()),
            git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            notes: "benchmark".into(),
            created_at: jiff::Timestamp::now(),
            created_by: "bench".into(),
            metrics: serde_json::json!({"accuracy": 0.88, "roc_auc": 0.85, "pr_auc": 0.41, "log_loss": 0.27}),
            golden: Vec::new(),
            training: None,
        };
        reg.create_release(&record).await.unwrap();
    }
    println!("created {n} releases in {:.2?}", started.elapsed());
    for round in 1..=3 {
        let t = Instant::now();
        let tags = reg.list_release_tags().await.unwrap();
        let tags_time = t.elapsed();
        let t = Instant::now();
        let records = reg.list_releases().await.unwrap();
        let records_time = t.elapsed();
        assert_eq!((tags.len(), records.len()), (n as usize, n as usize));
        println!(
            "round {round}: list_release_tags {tags_time:.2?}, list_releases (all records) {records_time:.2?}"
        );
    }
    println!("peak RSS {} MiB", peak_rss_mib());
}

async fn push_pull(mb: usize, backend: Backend, in_memory: bool) {
    let fx = Fixture::new(backend).await;
    let reg = &fx.registry;
    let size = mb * 1024 * 1024;
    let src = fx.dir.path().join("model.pbm");
    write_source(&src, mb);
    println!(
        "{backend:?}: {mb} MiB artifact; peak RSS after writing the source file {} MiB",
        peak_rss_mib()
    );
    let rate = |d: std::time::Duration| size as f64 / (1024.0 * 1024.0) / d.as_secs_f64();

    let t = Instant::now();
    let pushed = reg.push_file(&src).await.unwrap();
    let d = t.elapsed();
    println!(
        "push_file     {d:.2?}  {:.0} MiB/s  peak RSS {} MiB",
        rate(d),
        peak_rss_mib()
    );

    let t = Instant::now();
    let again = reg.push_file(&src).await.unwrap();
    assert!(!again.uploaded);
    let d = t.elapsed();
    println!(
        "push (again)  {d:.2?}  {:.0} MiB/s  (hash + re-verify stored copy)",
        rate(d)
    );

    let dest = fx.dir.path().join("pulled.pbm");
    let t = Instant::now();
    reg.pull_to(&pushed.digest, &dest).await.unwrap();
    let d = t.elapsed();
    println!(
        "pull_to       {d:.2?}  {:.0} MiB/s  peak RSS {} MiB",
        rate(d),
        peak_rss_mib()
    );

    if !in_memory {
        return;
    }
    let t = Instant::now();
    let bytes = reg.pull(&pushed.digest).await.unwrap();
    let d = t.elapsed();
    assert_eq!(bytes.len(), size);
    println!(
        "pull (memory) {d:.2?}  {:.0} MiB/s  peak RSS {} MiB",
        rate(d),
        peak_rss_mib()
    );
}

/// Write `mb` MiB of pseudo-random bytes, 1 MiB at a time (so the source file itself
/// does not inflate the peak RSS being measured).
fn write_source(path: &std::path::Path, mb: usize) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..mb {
        file.write_all(&common::bytes(i as u64 + 7, 1024 * 1024))
            .unwrap();
    }
    file.flush().unwrap();
}

/// Peak resident set size of this process so far, from /proc (Linux only).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
