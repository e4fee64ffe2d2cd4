use std::path::PathBuf;

/// Everything that can go wrong while reading or cleaning data. Messages name the file,
/// line, column or config key involved, because the user has to find and fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: malformed CSV{}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Csv {
        source_name: String,
        line: Option<u64>,
        #[source]
        source: csv::Error,
    },
    #[error("{source_name} is empty: expected a header row and at least one data row")]
    Empty { source_name: String },
    #[error(
        "{source_name} line {line}: expected {expected} fields as in the header, found {found}"
    )]
    Ragged {
        source_name: String,
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("{source_name}: duplicate column `{column}` in the header")]
    DuplicateColumn { source_name: String, column: String },
    #[error("{source_name}: column `{column}` named in {key} is not in the header ({header})")]
    MissingColumn {
        source_name: String,
        column: String,
        key: String,
        header: String,
    },
    #[error("{source_name} line {line}, column `{column}`: {reason}")]
    BadValue {
        source_name: String,
        line: u64,
        column: String,
        reason: String,
    },
    #[error("config key `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("{source_name}: target column `{column}`: {reason}")]
    Target {
        source_name: String,
        column: String,
        reason: String,
    },
    #[error("{source_name}: {reason}")]
    Invalid { source_name: String, reason: String },
}

/// One bad field of a single record, as reported to an API client.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
