//! Where settings come from: names of environment variables, and helpers shared by
//! commands (reading files with the path in the error, writing files atomically).

use std::path::Path;

use anyhow::Context as _;

/// Environment variable names, in one place.
pub mod env {
    /// `json` for JSON log lines.
    pub const LOG_FORMAT: &str = "PREDICT_BUY_LOG_FORMAT";
    /// Overrides the registry URL of `predict-buy.yaml`.
    pub const REGISTRY: &str = "PREDICT_BUY_REGISTRY";
    /// Bearer token for the server's admin endpoints.
    pub const ADMIN_TOKEN: &str = "PREDICT_BUY_ADMIN_TOKEN";
    /// File holding the admin token.
    pub const ADMIN_TOKEN_FILE: &str = "PREDICT_BUY_ADMIN_TOKEN_FILE";
    /// `serve --addr`.
    pub const SERVE_ADDR: &str = "PREDICT_BUY_ADDR";
    /// `serve --body-limit` (bytes).
    pub const SERVE_BODY_LIMIT: &str = "PREDICT_BUY_BODY_LIMIT";
    /// `serve --batch-limit` (instances).
    pub const SERVE_BATCH_LIMIT: &str = "PREDICT_BUY_BATCH_LIMIT";
    /// `serve --concurrency-limit` (requests in flight).
    pub const SERVE_CONCURRENCY_LIMIT: &str = "PREDICT_BUY_CONCURRENCY_LIMIT";
    /// `serve --timeout` (`10s`, `500ms`).
    pub const SERVE_TIMEOUT: &str = "PREDICT_BUY_REQUEST_TIMEOUT";
    /// `serve --poll-interval` (`1s`).
    pub const SERVE_POLL_INTERVAL: &str = "PREDICT_BUY_POLL_INTERVAL";
    /// `serve --workers`.
    pub const SERVE_WORKERS: &str = "PREDICT_BUY_WORKERS";
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
/// so readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| set_readable(tmp.as_file()))
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The current time as RFC 3339, for metadata.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Temporary files are created private; the files they become are ordinary ones.
#[cfg(unix)]
pub fn set_readable(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
pub fn set_readable(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}
