use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::Model;

use crate::{CliError, Outcome};

#[derive(Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// A labelled CSV in the training schema.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn load_model(path: &Path) -> Result<Model, CliError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read model {}", path.display()))
        .map_err(CliError::input)?;
    Model::from_bytes(&bytes)
        .with_context(|| format!("cannot load model {}", path.display()))
        .map_err(CliError::input)
}

pub fn run(a: EvaluateArgs) -> Outcome {
    let model = load_model(&a.model)?;
    let table = Table::from_path(&a.data).map_err(CliError::input)?;
    let report = model.evaluate_table(&table).map_err(CliError::input)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialise")
        );
    } else {
        println!("model      {} ({})", a.model.display(), model.digest());
        println!(
            "threshold  {:.4} ({})",
            report.threshold,
            model.threshold().method
        );
        crate::commands::train::print_eval(&report);
    }
    Ok(())
}
