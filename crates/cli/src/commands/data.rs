use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

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
}

pub fn run(cmd: DataCommand) -> Outcome {
    match cmd {
        DataCommand::Synth(a) => synth(&a),
    }
}

pub fn synth(a: &SynthArgs) -> Outcome {
    if !(0.0..1.0).contains(&a.test_fraction) {
        return Err(CliError::input(anyhow::anyhow!(
            "--test-fraction {} is not in [0, 1)",
            a.test_fraction
        )));
    }
    if a.rows == 0 {
        return Err(CliError::input(anyhow::anyhow!(
            "--rows must be at least 1"
        )));
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    // Written beside the final names and renamed, so a crash leaves no half file.
    let train_path = a.out.join("train.csv");
    let test_path = a.out.join("test.csv");
    let mut train = tempfile::NamedTempFile::new_in(&a.out)?;
    let mut test = tempfile::NamedTempFile::new_in(&a.out)?;
    let (n_train, n_test) = {
        let mut tw = BufWriter::with_capacity(1 << 20, train.as_file_mut());
        let mut sw = BufWriter::with_capacity(1 << 20, test.as_file_mut());
        let counts =
            predict_buy_data::synth::write_split(a.seed, a.rows, a.test_fraction, &mut tw, &mut sw)
                .with_context(|| format!("cannot write to {}", a.out.display()))?;
        tw.into_inner().map_err(|e| e.into_error())?;
        sw.into_inner().map_err(|e| e.into_error())?;
        counts
    };
    // Temp files are private; data files are not.
    for f in [&train, &test] {
        crate::project::set_readable(f.as_file())?;
    }
    train
        .persist(&train_path)
        .with_context(|| format!("cannot write {}", train_path.display()))?;
    test.persist(&test_path)
        .with_context(|| format!("cannot write {}", test_path.display()))?;
    eprintln!(
        "wrote {n_train} rows to {} and {n_test} rows to {}",
        train_path.display(),
        test_path.display()
    );
    Ok(())
}
