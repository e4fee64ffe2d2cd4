//! `predict-buy data synth|push|pull`: synthetic rows in the raw insurance schema, and
//! data files versioned in the registry by digest, with pointer files for git.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand};
use predict_buy_registry::{DataPointer, Digest, PointerKind, Registry};
use serde::Serialize;

use crate::commands::registry::open_existing;
use crate::error::IoError;
use crate::project::{out_json, outln, set_readable};
use crate::registry_url::{RegistryArg, open_registry, registry_error, runtime};
use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Write DIR/train.csv and DIR/test.csv with realistic synthetic rows.
    Synth(SynthArgs),
    /// Store data files in the registry by digest (zstd-compressed) and write a pointer
    /// file FILE.ref.yaml beside each, to commit to git instead of the data.
    Push(PushArgs),
    /// Restore data files from their pointer files, checking each digest. Never
    /// replaces a file with different content unless --force.
    Pull(PullArgs),
}

#[derive(Args)]
pub struct PushArgs {
    /// The data files (e.g. data/train.csv data/test.csv).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

#[derive(Args)]
pub struct PullArgs {
    /// Pointer files (FILE.ref.yaml); default: every data pointer under the current
    /// folder.
    #[arg(value_name = "POINTER")]
    pub pointers: Vec<PathBuf>,
    /// Replace a local file whose content differs from its pointer's.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

/// One file `data push` stored.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub path: PathBuf,
    pub pointer: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub stored_size: u64,
    pub uploaded: bool,
}

/// One file `data pull` restored (or found up to date).
#[derive(Debug, Serialize)]
pub struct Pulled {
    pub pointer: PathBuf,
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub written: bool,
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
        DataCommand::Push(a) => runtime()?.block_on(push(&a)),
        DataCommand::Pull(a) => runtime()?.block_on(pull(&a)),
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

async fn push(a: &PushArgs) -> Outcome {
    let registry = open_registry(a.registry.registry.as_deref())?;
    let pushed = push_files(&registry, &a.files).await?;
    if a.json {
        return out_json(&pushed);
    }
    for p in &pushed {
        outln!("{}  {}", p.digest, p.path.display())?;
        let how = if p.uploaded {
            "stored"
        } else {
            "already stored"
        };
        eprintln!(
            "{how} {} ({} bytes, {} compressed); pointer {}",
            p.path.display(),
            p.size,
            p.stored_size,
            p.pointer.display()
        );
    }
    eprintln!(
        "commit the pointer files to git; `predict-buy data pull` restores the data from {}",
        registry.describe()
    );
    Ok(())
}

/// Pushes each file and writes its pointer beside it; other commands (quickstart)
/// reuse it. Prints nothing.
pub async fn push_files(registry: &Registry, files: &[PathBuf]) -> Result<Vec<Pushed>, CliError> {
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        if DataPointer::is_pointer_path(path) {
            return Err(CliError::usage(format!(
                "{} is a pointer file; push the data file it points to",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(CliError::usage(format!(
                "{}: no such data file",
                path.display()
            )));
        }
        let outcome = registry
            .push_data_file(path)
            .await
            .map_err(registry_error)?;
        let pointer_path = DataPointer::path_for(path);
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        DataPointer {
            kind: PointerKind::Data,
            digest: outcome.digest.clone(),
            size: outcome.size,
            name,
            registry: Some(registry.url().to_string()),
        }
        .write(&pointer_path)
        .map_err(registry_error)?;
        out.push(Pushed {
            path: path.clone(),
            pointer: pointer_path,
            digest: outcome.digest,
            size: outcome.size,
            stored_size: outcome.stored_size,
            uploaded: outcome.uploaded,
        });
    }
    Ok(out)
}

async fn pull(a: &PullArgs) -> Outcome {
    let pointers = if a.pointers.is_empty() {
        let found = find_pointers(Path::new("."))?;
        if found.is_empty() {
            return Err(CliError::usage(
                "no data pointer files (*.ref.yaml) under the current folder",
            )
            .with_hint("name them: `predict-buy data pull data/train.csv.ref.yaml`"));
        }
        found
    } else {
        a.pointers.clone()
    };
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let mut pulled = Vec::with_capacity(pointers.len());
    for pointer_path in &pointers {
        let pointer = DataPointer::read(pointer_path).map_err(registry_error)?;
        let path = pointer.data_path(pointer_path);
        let outcome = registry
            .pull_data_to(&pointer.digest, &path, a.force)
            .await
            .map_err(|e| {
                registry_error(e).context(format!("pulling {}", pointer_path.display()))
            })?;
        if outcome.size != pointer.size {
            // The digest matched, so the pointer's size field was edited by hand.
            return Err(CliError::input(anyhow!(
                "pointer {} says {} bytes, but its digest names {} bytes",
                pointer_path.display(),
                pointer.size,
                outcome.size
            )));
        }
        pulled.push(Pulled {
            pointer: pointer_path.clone(),
            path,
            digest: pointer.digest,
            size: outcome.size,
            written: outcome.written,
        });
    }
    if a.json {
        return out_json(&pulled);
    }
    for p in &pulled {
        let how = if p.written { "restored" } else { "up to date" };
        outln!(
            "{how}  {}  ({} bytes, {})",
            p.path.display(),
            p.size,
            p.digest
        )?;
    }
    Ok(())
}

/// Data pointer files under `root`, sorted; model pointers (no `kind: data`) and the
/// folders of tools (`.git`, `target`, `.predict-buy`) are skipped.
fn find_pointers(root: &Path) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(IoError::read(&dir))?;
        for entry in entries {
            let entry = entry.map_err(IoError::read(&dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry.file_type().map_err(IoError::read(&path))?;
            if kind.is_dir() {
                if !matches!(name.as_ref(), ".git" | "target" | ".predict-buy") {
                    pending.push(path);
                }
            } else if kind.is_file()
                && DataPointer::is_pointer_path(&path)
                && is_data_pointer(&path)
            {
                out.push(
                    path.strip_prefix(root)
                        .map_or(path.clone(), Path::to_path_buf),
                );
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_data_pointer(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(|k| k == "data"))
        .unwrap_or(false)
}
