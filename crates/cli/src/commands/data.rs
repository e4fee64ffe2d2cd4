//! `predict-buy data synth`: synthetic rows in the raw insurance schema.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::error::IoError;
use crate::project::{out_json, set_readable};
use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write DIR/train.csv and DIR/test.csv with realistic synthetic rows.
    Synth(SynthArgs),
}

#[derive(Args)]
pub struct SynthArgs {
    /// Rows in total, across both files.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "data")]
    pub out: PathBuf,
    /// Share of rows written to test.csv.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Print what was written as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One file `data synth` wrote.
#[derive(Debug, Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub rows: usize,
}

/// What `data synth` wrote.
#[derive(Debug, Serialize)]
pub struct Synthesized {
    pub seed: u64,
    pub train: Written,
    pub test: Written,
}

pub fn run(cmd: DataCommand) -> Outcome {
    match cmd {
        DataCommand::Synth(a) => {
            let done = synth(&a)?;
            if a.json {
                out_json(&done)
            } else {
                eprintln!(
                    "wrote {} rows to {} and {} rows to {}",
                    done.train.rows,
                    done.train.path.display(),
                    done.test.rows,
                    done.test.path.display()
                );
                Ok(())
            }
        }
    }
}

/// Writes both files; prints nothing, so other commands can reuse it.
pub fn synth(a: &SynthArgs) -> Result<Synthesized, CliError> {
    if !(0.0..1.0).contains(&a.test_fraction) {
        return Err(CliError::usage(format!(
            "--test-fraction {} is not in [0, 1)",
            a.test_fraction
        )));
    }
    if a.rows == 0 {
        return Err(CliError::usage("--rows must be at least 1"));
    }
    std::fs::create_dir_all(&a.out).map_err(IoError::write(&a.out))?;
    // Written beside the final names and renamed, so a crash leaves no half file.
    let train_path = a.out.join("train.csv");
    let test_path = a.out.join("test.csv");
    let mut train = tempfile::NamedTempFile::new_in(&a.out).map_err(IoError::write(&a.out))?;
    let mut test = tempfile::NamedTempFile::new_in(&a.out).map_err(IoError::write(&a.out))?;
    let (n_train, n_test) = {
        let mut tw = BufWriter::with_capacity(1 << 20, train.as_file_mut());
        let mut sw = BufWriter::with_capacity(1 << 20, test.as_file_mut());
        let counts =
            predict_buy_data::synth::write_split(a.seed, a.rows, a.test_fraction, &mut tw, &mut sw)
                .map_err(IoError::write(&a.out))?;
        tw.into_inner()
            .map_err(|e| IoError::write(&train_path)(e.into_error()))?;
        sw.into_inner()
            .map_err(|e| IoError::write(&test_path)(e.into_error()))?;
        counts
    };
    persist(train, &train_path)?;
    persist(test, &test_path)?;
    Ok(Synthesized {
        seed: a.seed,
        train: Written {
            path: train_path,
            rows: n_train,
        },
        test: Written {
            path: test_path,
            rows: n_test,
        },
    })
}

/// Temp files are private; data files are not.
fn persist(file: tempfile::NamedTempFile, path: &Path) -> Result<(), CliError> {
    set_readable(file.as_file()).map_err(IoError::write(path))?;
    file.persist(path)
        .map_err(|e| IoError::write(path)(e.error))?;
    Ok(())
}
