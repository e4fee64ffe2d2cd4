//! `predict-buy registry gc`: housekeeping of the registry itself, and the way every
//! read-only command opens a registry (without creating one).

use std::time::Duration;

use clap::{Args, Subcommand};
use predict_buy_registry::{GcMode, InterruptedWrite, Registry, RegistryUrl};
use serde::Serialize;

use crate::project::outln;
use crate::registry_url::{RegistryArg, registry_error, registry_url, runtime};
use crate::{CliError, Outcome};

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Remove leftovers of interrupted writes (staging files a killed writer left on
    /// disk, unfinished multipart uploads on S3) and data objects no release names.
    /// Never removes artifacts, records, or data a release names.
    Gc(GcArgs),
}

#[derive(Args)]
pub struct GcArgs {
    /// Only remove leftovers inactive for at least this long (e.g. 30m, 1h, 2d; at most 7d). A
    /// leftover younger than that may belong to a write still in progress; on S3 the
    /// age counts from the start of the upload, so keep it above your longest push.
    #[arg(long, value_name = "AGE", default_value = "1h", value_parser = crate::settings::parse_min_age)]
    pub min_age: Duration,
    /// Only remove data objects no release names once they are this old (e.g. 12h,
    /// 3d; at most 7d): data is pushed, trained on and only then released.
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = crate::settings::parse_min_age)]
    pub data_min_age: Duration,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

pub fn run(c: RegistryCommand) -> Outcome {
    let rt = runtime()?;
    match c {
        RegistryCommand::Gc(a) => rt.block_on(gc(&a)),
    }
}

/// Opens the registry at `url` for a command that only reads: a missing registry is
/// bad input (exit 2) with a hint (see `error.rs`), and nothing is created.
pub async fn open_existing_at(url: &RegistryUrl) -> Result<Registry, CliError> {
    Ok(Registry::open_existing(url).await?)
}

/// [`open_existing_at`] for the registry named by `--registry`, the environment or
/// predict-buy.yaml.
pub async fn open_existing(flag: Option<&str>) -> Result<Registry, CliError> {
    open_existing_at(&registry_url(flag)?).await
}

/// A duration as people write it: `2h 5m`, `40s`.
pub fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// One leftover as `--json` shows it.
#[derive(Serialize)]
pub struct Leftover<'a> {
    #[serde(flatten)]
    write: &'a InterruptedWrite,
    age_seconds: u64,
    location: String,
}

pub fn leftovers(writes: &[InterruptedWrite], now: jiff::Timestamp) -> Vec<Leftover<'_>> {
    writes
        .iter()
        .map(|w| Leftover {
            write: w,
            age_seconds: w.age(now).as_secs(),
            location: w.location(),
        })
        .collect()
}

/// One human line about a leftover: what it was writing, how big and old it is.
pub fn describe(w: &InterruptedWrite, now: jiff::Timestamp) -> String {
    let size = w.size.map_or_else(String::new, |s| format!("{s} bytes, "));
    format!(
        "{}  ({size}{} old; {})",
        w.target,
        human_age(w.age(now)),
        w.location()
    )
}

async fn gc(a: &GcArgs) -> Outcome {
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let mode = if a.dry_run {
        GcMode::DryRun
    } else {
        GcMode::Remove
    };
    let report = registry
        .clean_interrupted_writes(a.min_age, mode)
        .await
        .map_err(registry_error)?;
    let data = registry
        .collect_unreferenced_data(a.data_min_age, mode)
        .await
        .map_err(registry_error)?;
    let any_data = !(data.removed.is_empty() && data.named.is_empty() && data.young.is_empty());
    let now = jiff::Timestamp::now();
    if a.json {
        let mut doc = serde_json::json!({
            "registry": registry.describe(),
            "dry_run": a.dry_run,
            "min_age_seconds": a.min_age.as_secs(),
            "removed": leftovers(&report.removed, now),
            "kept": leftovers(&report.kept, now),
            "bytes_freed": report.bytes_freed(),
        });
        // Only registries holding data objects grow the key, so older readers of
        // this document see what they always saw.
        if any_data {
            doc["data"] = serde_json::json!({
                "min_age_seconds": a.data_min_age.as_secs(),
                "removed": data.removed,
                "named_by_releases": data.named,
                "younger": data.young,
                "bytes_freed": data.bytes_freed(),
            });
        }
        crate::project::out_json(&doc)?;
        return Ok(());
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    for w in &report.removed {
        outln!("{verb}  {}", describe(w, now))?;
    }
    for w in &report.kept {
        outln!("kept  {}", describe(w, now))?;
    }
    for d in &data.removed {
        outln!(
            "{verb}  data {}  ({} bytes stored, named by no release)",
            d.digest,
            d.stored_size
        )?;
    }
    for d in &data.young {
        outln!(
            "kept  data {}  (named by no release, younger than {})",
            d.digest,
            human_age(a.data_min_age)
        )?;
    }
    if any_data {
        eprintln!(
            "{verb} {} data object(s) ({} bytes); kept {} named by a release and {} younger than {}",
            data.removed.len(),
            data.bytes_freed(),
            data.named.len(),
            data.young.len(),
            human_age(a.data_min_age)
        );
    }
    let min_age = human_age(a.min_age);
    eprintln!(
        "{verb} {} leftover(s) of interrupted writes ({} bytes) from {}; kept {} younger than {min_age}, which a writer may still own",
        report.removed.len(),
        report.bytes_freed(),
        registry.describe(),
        report.kept.len(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(human_age(Duration::from_secs(42)), "42s");
        assert_eq!(human_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human_age(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human_age(Duration::from_secs(90_000)), "1d 1h");
    }
}
