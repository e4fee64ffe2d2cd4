//! `predict-buy evaluate`: score a model on a labelled CSV.

use std::path::{Path, PathBuf};

use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::Model;

use crate::error::IoError;
use crate::project::{out_json, outln};
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

/// A model artifact from a file the user named.
pub fn load_model(path: &Path) -> Result<Model, CliError> {
    let bytes = std::fs::read(path).map_err(IoError::read(path))?;
    Model::from_bytes(&bytes)
        .map_err(|e| CliError::from(e).context(format!("cannot load model {}", path.display())))
}

pub fn run(a: EvaluateArgs) -> Outcome {
    let model = load_model(&a.model)?;
    let table = Table::from_path(&a.data)?;
    let report = model.evaluate_table(&table)?;
    if a.json {
        return out_json(&report);
    }
    outln!("model      {} ({})", a.model.display(), model.digest())?;
    outln!(
        "threshold  {:.4} ({})",
        report.threshold,
        model.threshold().method
    )?;
    crate::commands::train::print_eval(&report)
}
