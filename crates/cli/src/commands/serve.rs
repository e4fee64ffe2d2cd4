use clap::Args;

use crate::{CliError, Outcome};

#[derive(Args)]
pub struct ServeArgs {}

pub fn run(_a: ServeArgs) -> Outcome {
    Err(CliError::failed(anyhow::anyhow!("serve is not wired yet")))
}
