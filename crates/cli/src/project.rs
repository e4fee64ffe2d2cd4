//! Names of environment variables, and file and output helpers shared by commands
//! (writing files atomically, writing to stdout without panicking on a closed pipe).
//! How settings are resolved from these variables is `settings.rs`'s business.

use std::io::Write as _;
use std::path::Path;

use crate::CliError;
use crate::error::IoError;

/// Environment variable names, in one place.
pub mod env {
    /// Log filter (`info`, `predict_buy_serve=debug`), as `RUST_LOG` is elsewhere.
    pub const LOG: &str = "PREDICT_BUY_LOG";
    /// `json` for JSON log lines.
    pub const LOG_FORMAT: &str = "PREDICT_BUY_LOG_FORMAT";
    /// Overrides the registry URL of `predict-buy.yaml`.
    pub const REGISTRY: &str = "PREDICT_BUY_REGISTRY";
    /// `release create --allow-unversioned-data` as a setting (`1`/`true`).
    pub const ALLOW_UNVERSIONED_DATA: &str = "PREDICT_BUY_ALLOW_UNVERSIONED_DATA";
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
    /// Who is recorded in history and releases (CI sets it to the person who started
    /// the workflow); else `$USER`, else the account name of the uid.
    pub const ACTOR: &str = "PREDICT_BUY_ACTOR";
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
/// so readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] for contents produced as they are written (a large artifact),
/// so they never need to be whole in memory first.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(IoError::write(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(IoError::write(dir))?;
    write(tmp.as_file_mut())
        .and_then(|_| set_readable(tmp.as_file()))
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(IoError::write(path))?;
    tmp.persist(path)
        .map_err(|e| IoError::write(path)(e.error))?;
    Ok(())
}

/// Writes to stdout, reporting a reader that went away (`| head`) as an error that
/// ends the command quietly, where `print!` would panic.
pub fn out(bytes: impl AsRef<[u8]>) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes.as_ref())
        .and_then(|_| stdout.flush())
        .map_err(|e| IoError::Stdout(e).into())
}

/// One JSON document on stdout, pretty-printed, with a final newline.
pub fn out_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failed(anyhow::Error::new(e).context("cannot encode JSON")))?;
    text.push('\n');
    out(text)
}

/// `println!` that returns an error on a closed stdout instead of panicking.
macro_rules! outln {
    () => { $crate::project::out("\n") };
    ($($arg:tt)*) => { $crate::project::out(format!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;

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
