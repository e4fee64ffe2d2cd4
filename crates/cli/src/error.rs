//! The CLI's error: an `anyhow` chain plus the exit code it maps to and an optional hint.

use std::fmt::Display;

pub type Outcome = Result<(), CliError>;

#[derive(Debug)]
pub struct CliError {
    pub error: anyhow::Error,
    /// 1: the operation failed; 2: bad usage or invalid input.
    pub code: u8,
    pub hint: Option<String>,
}

impl CliError {
    /// Bad usage or invalid input (exit code 2).
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            code: 2,
            hint: None,
        }
    }

    /// The operation failed (exit code 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            code: 1,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    pub fn context(mut self, context: impl Display + Send + Sync + 'static) -> Self {
        self.error = self.error.context(context);
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.code
    }

    pub fn report(&self) {
        eprintln!("error: {}", self.error);
        for cause in self.error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

/// Lets `?` turn any error into "operation failed"; input errors are marked explicitly.
impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::failed(e)
    }
}
