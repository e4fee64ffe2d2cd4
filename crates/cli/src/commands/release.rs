use clap::Subcommand;

use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum ReleaseCommand {
    /// Record an immutable release.
    Create,
}

pub fn run(_c: ReleaseCommand) -> Outcome {
    Err(CliError::failed(anyhow::anyhow!(
        "release commands are not wired yet"
    )))
}
