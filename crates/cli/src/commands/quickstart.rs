use clap::Args;

use crate::{CliError, Outcome};

#[derive(Args)]
pub struct QuickstartArgs {}

pub fn run(_a: QuickstartArgs) -> Outcome {
    Err(CliError::failed(anyhow::anyhow!(
        "quickstart is not wired yet"
    )))
}
