use clap::Subcommand;

use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Store an artifact in the registry.
    Push,
}

pub fn run(_c: ModelCommand) -> Outcome {
    Err(CliError::failed(anyhow::anyhow!(
        "model commands are not wired yet"
    )))
}
