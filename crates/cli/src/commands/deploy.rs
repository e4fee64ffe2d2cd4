use clap::Args;

use crate::{CliError, Outcome};

#[derive(Args)]
pub struct DeployArgs {}
#[derive(Args)]
pub struct RollbackArgs {}
#[derive(Args)]
pub struct PromoteArgs {}
#[derive(Args)]
pub struct StatusArgs {}
#[derive(Args)]
pub struct HistoryArgs {}

fn todo() -> Outcome {
    Err(CliError::failed(anyhow::anyhow!(
        "deploy commands are not wired yet"
    )))
}
pub fn run_deploy(_a: DeployArgs) -> Outcome {
    todo()
}
pub fn run_rollback(_a: RollbackArgs) -> Outcome {
    todo()
}
pub fn run_promote(_a: PromoteArgs) -> Outcome {
    todo()
}
pub fn run_status(_a: StatusArgs) -> Outcome {
    todo()
}
pub fn run_history(_a: HistoryArgs) -> Outcome {
    todo()
}
