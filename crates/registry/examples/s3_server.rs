//! The registry tests' S3-compatible server (s3s + s3s-fs, over HTTP on 127.0.0.1) as
//! a process of its own, for bench scripts that need a real S3 endpoint for
//! `predict-buy` itself, such as `bench/deploy/cold_start.sh`.
//!
//! ```text
//! cargo run --release -p predict-buy-registry --example s3_server -- ROOT [ADDR_FILE]
//! ```
//! Objects live under `ROOT/models/<key>` (bucket `models`). The endpoint
//! (`http://127.0.0.1:PORT`) is printed on stdout and, when given, written to
//! ADDR_FILE once the server listens. Credentials: `predict-buy-test` /
//! `predict-buy-test-secret`. It serves until killed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: s3_server ROOT [ADDR_FILE]");
        std::process::exit(2);
    };
    let server = common::S3Server::start(root).await;
    println!("{}", server.endpoint);
    if let Some(addr_file) = args.next().map(PathBuf::from) {
        // Written whole, then renamed, so a reader never sees half an address.
        let partial = addr_file.with_extension("partial");
        if let Err(e) = std::fs::write(&partial, &server.endpoint)
            .and_then(|()| std::fs::rename(&partial, &addr_file))
        {
            eprintln!("s3_server: cannot write {}: {e}", addr_file.display());
            std::process::exit(1);
        }
    }
    std::future::pending::<()>().await;
}
