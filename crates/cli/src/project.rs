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
