//! `predict-buy release reproduce TAG`: rebuild a release's model from the data and
//! config the release names, and prove it is the same model.
//!
//! Training is a pure function of data, config, seeds and code (see
//! `crates/model/tests/determinism.rs`), so the retrained artifact must be the same
//! bytes. Two recorded fields are not inputs of training:
//!
//! - `metadata.trained_at`, the wall-clock time of training. The retrain is given the
//!   original artifact's value, so it matches by construction and is not a reason to
//!   differ.
//! - `metadata.tool_version`, the predict-buy version. A retrain by another version
//!   records its own version (the artifact must not lie about what built it); the
//!   command then warns, naming both versions, and compares the payloads with that
//!   one field set aside. Equal apart from it is reported as reproduced, but not bit
//!   for bit.
//!
//! Everything else (config, data digests, metrics, trees, threshold, calibration,
//! encoder, golden rows) must be equal. A difference is reported in the order that
//! explains it best: the config first (a changed input), then the metrics, then the
//! trees (the first differing tree and node), then anything else.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use clap::Args;
use predict_buy_data::Table;
use predict_buy_model::{Model, TrainConfig};
use predict_buy_registry::{Digest, ReleaseTag};
use serde::Serialize;
use serde_json::Value;

use crate::commands::registry::open_existing;
use crate::commands::train::{LoadedData, TOOL_VERSION, fit, load_config};
use crate::error::Code;
use crate::progress::Bars;
use crate::project::{out_json, outln, write_atomic};
use crate::registry_url::{RegistryArg, registry_error};
use crate::{CliError, Outcome};

/// How many differing config keys are listed.
const CONFIG_KEYS_SHOWN: usize = 10;

#[derive(Args)]
pub struct ReproduceArgs {
    /// The release tag, vMAJOR.MINOR.PATCH.
    pub tag: String,
    /// Retrain with this config instead of the release's, e.g. to check whether a
    /// config edited since still gives the released model.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also write the retrained artifact here.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArg,
}

/// One difference between the release's artifact and the retrained one.
#[derive(Debug, Serialize, PartialEq)]
pub struct Difference {
    /// `config`, `metrics`, `trees` or `other`.
    pub section: &'static str,
    /// Where in the artifact's payload, e.g. `ensemble.trees[3].nodes[17].threshold`.
    pub path: String,
    pub release: Value,
    pub now: Value,
}

#[derive(Debug, Serialize)]
struct Report {
    tag: String,
    reproduced: bool,
    /// The retrained artifact is the release's, byte for byte.
    bit_for_bit: bool,
    release_digest: Digest,
    new_digest: Digest,
    release_tool_version: String,
    tool_version: String,
    /// Fields set aside when comparing (see the module docs).
    excluded: Vec<&'static str>,
    differences: Vec<Difference>,
}

pub async fn run(a: &ReproduceArgs) -> Outcome {
    let tag = ReleaseTag::parse(&a.tag).map_err(registry_error)?;
    let registry = open_existing(a.registry.registry.as_deref()).await?;
    let release = registry.get_release(&tag).await.map_err(registry_error)?;
    let Some(training) = &release.training else {
        return Err(CliError::input(anyhow!(
            "release {tag} records no training data or config (it was created before data versioning)"
        ))
        .with_hint("cut a new release from a model trained with data pushed by `predict-buy data push`"));
    };
    if training.data.is_empty() {
        return Err(CliError::input(anyhow!(
            "release {tag} records no data digest to retrain from"
        )));
    }

    let original_bytes = registry
        .pull(&release.model_digest)
        .await
        .map_err(|e| registry_error(e).context(format!("pulling the model of release {tag}")))?;
    let original = Model::from_bytes(&original_bytes)
        .with_context(|| format!("the model of release {tag} does not load"))
        .map_err(CliError::failed)?;

    let mut train = None;
    let mut test = None;
    for d in &training.data {
        let bytes = registry.read_data(&d.digest).await.map_err(|e| {
            registry_error(e).context(format!(
                "pulling the {} data {} ({}) of release {tag}",
                d.role, d.name, d.digest
            ))
        })?;
        let table = Table::from_reader(bytes.as_slice(), &d.name)?;
        match d.role.as_str() {
            "test" => test = Some(table),
            _ => train = Some(table),
        }
    }
    let train = train
        .ok_or_else(|| CliError::input(anyhow!("release {tag} names no training data file")))?;
    let meta = original.metadata();
    let data = LoadedData {
        train,
        test,
        files: meta.data_files.clone(),
        data_digest: meta.data_digest.clone(),
    };

    let config_json = match &a.config {
        Some(path) => serde_json::to_value(load_config(Some(path))?).map_err(CliError::failed)?,
        None => training.config.clone(),
    };
    let config: TrainConfig = serde_json::from_value(config_json)
        .with_context(|| format!("the config recorded by release {tag} is not a training config"))
        .map_err(CliError::input)?;

    if training.tool_version != TOOL_VERSION {
        eprintln!(
            "warning: release {tag} was trained by predict-buy {}, this is predict-buy {TOOL_VERSION}; a difference may come from the tool, not from the data or config",
            training.tool_version
        );
    }
    eprintln!(
        "retraining release {tag} from {} data file(s) and {}",
        training.data.len(),
        a.config.as_ref().map_or_else(
            || "its recorded config".to_string(),
            |p| format!("the config {}", p.display())
        )
    );
    let bars = Bars::new();
    let fitted = fit(
        &config,
        &data,
        meta.trained_at.clone(),
        meta.git_commit.clone(),
        &bars,
    );
    bars.finish();
    let (model, _) = fitted?;
    let new_bytes = model.to_bytes();
    if let Some(out) = &a.out {
        write_atomic(out, &new_bytes)?;
    }
    let new_digest = Digest::of(&new_bytes);
    let bit_for_bit = new_digest == release.model_digest;
    let differences = if bit_for_bit {
        Vec::new()
    } else {
        differences(&original, &model)?
    };
    let report = Report {
        tag: tag.to_string(),
        reproduced: differences.is_empty(),
        bit_for_bit,
        release_digest: release.model_digest.clone(),
        new_digest,
        release_tool_version: training.tool_version.clone(),
        tool_version: TOOL_VERSION.to_string(),
        excluded: vec!["metadata.trained_at", "metadata.tool_version"],
        differences,
    };
    if a.json {
        out_json(&report)?;
    } else {
        print(&report)?;
    }
    if report.reproduced {
        Ok(())
    } else {
        Err(CliError {
            error: anyhow!(
                "release {tag} did not reproduce: {}",
                report
                    .differences
                    .first()
                    .map_or_else(String::new, describe)
            ),
            code: Code::Failed,
            hint: None,
        })
    }
}

fn print(r: &Report) -> Outcome {
    if r.bit_for_bit {
        return outln!("reproduced {} ({}, bit for bit)", r.tag, r.new_digest);
    }
    if r.reproduced {
        return outln!(
            "reproduced {} (identical but for the recorded tool version: {} then, {} now)",
            r.tag,
            r.release_tool_version,
            r.tool_version
        );
    }
    outln!(
        "not reproduced {}: the retrained artifact is {}, the release's {}",
        r.tag,
        r.new_digest,
        r.release_digest
    )?;
    for d in &r.differences {
        outln!("  {}", describe(d))?;
    }
    Ok(())
}

/// One difference as a line: `config model.params.max_depth: release 3, now 4`.
fn describe(d: &Difference) -> String {
    let place = match d.section {
        "trees" => tree_place(&d.path),
        "config" => d.path.trim_start_matches("metadata.config.").to_string(),
        "metrics" => d.path.trim_start_matches("metadata.metrics.").to_string(),
        _ => d.path.clone(),
    };
    format!(
        "{:<8} {place}: release {}, now {}",
        d.section,
        short(&d.release),
        short(&d.now)
    )
}

/// `ensemble.trees[3].nodes[17].threshold` → `tree 3, node 17, threshold`; a tree
/// stored column-wise (`ensemble.trees[3].threshold[17]`) reads the same.
fn tree_place(path: &str) -> String {
    let rest = path.trim_start_matches("ensemble.");
    let mut parts = Vec::new();
    let mut in_tree = false;
    for segment in rest.split('.') {
        match segment.split_once('[') {
            Some(("trees", i)) => {
                in_tree = true;
                parts.push(format!("tree {}", i.trim_end_matches(']')));
            }
            Some(("nodes", i)) => parts.push(format!("node {}", i.trim_end_matches(']'))),
            Some((field, i)) if in_tree => {
                parts.push(format!("node {}", i.trim_end_matches(']')));
                parts.push(field.to_string());
            }
            _ => parts.push(segment.to_string()),
        }
    }
    parts.join(", ")
}

/// A value short enough for one line.
fn short(v: &Value) -> String {
    let text = match v {
        Value::Null => "absent".to_string(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// What differs between two artifacts, by section (see the module docs); empty when
/// they differ only in the excluded fields.
fn differences(release: &Model, now: &Model) -> Result<Vec<Difference>, CliError> {
    let mut a = serde_json::to_value(release.payload()).map_err(CliError::failed)?;
    let mut b = serde_json::to_value(now.payload()).map_err(CliError::failed)?;
    for v in [&mut a, &mut b] {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("trained_at");
            meta.remove("tool_version");
        }
    }
    if a == b {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let at = |v: &Value, pointer: &str| v.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mut config = Vec::new();
    all_leaf_differences(
        &at(&a, "/metadata/config"),
        &at(&b, "/metadata/config"),
        "metadata.config",
        &mut config,
    );
    out.extend(
        config
            .into_iter()
            .take(CONFIG_KEYS_SHOWN)
            .map(|(path, release, now)| Difference {
                section: "config",
                path,
                release,
                now,
            }),
    );
    for (section, pointer, prefix) in [
        ("metrics", "/metadata/metrics", "metadata.metrics"),
        ("trees", "/ensemble", "ensemble"),
    ] {
        if let Some((path, release, now)) =
            first_difference(&at(&a, pointer), &at(&b, pointer), prefix)
        {
            out.push(Difference {
                section,
                path,
                release,
                now,
            });
        }
    }
    if out.is_empty()
        && let Some((path, release, now)) = first_difference(&a, &b, "")
    {
        out.push(Difference {
            section: "other",
            path,
            release,
            now,
        });
    }
    Ok(out)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The first place two JSON values differ, depth first in key order.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<(String, Value, Value)> {
    if a == b {
        return None;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &child(path, k),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]")))
            .or_else(|| {
                Some((
                    format!("{path} (length)"),
                    Value::from(x.len()),
                    Value::from(y.len()),
                ))
            }),
        _ => Some((path.to_string(), a.clone(), b.clone())),
    }
}

/// Every leaf where two JSON values differ, in key order (for configs, where each
/// changed key is worth naming).
fn all_leaf_differences(a: &Value, b: &Value, path: &str, out: &mut Vec<(String, Value, Value)>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                all_leaf_differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &child(path, k),
                    out,
                );
            }
        }
        _ => out.push((path.to_string(), a.clone(), b.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_difference_walks_keys_then_indices() {
        let a = json!({"trees": [{"nodes": [{"t": 1.0}, {"t": 2.0}]}, {"nodes": []}]});
        let b = json!({"trees": [{"nodes": [{"t": 1.0}, {"t": 2.5}]}, {"nodes": [1]}]});
        let (path, x, y) = first_difference(&a, &b, "ensemble").unwrap();
        assert_eq!(path, "ensemble.trees[0].nodes[1].t");
        assert_eq!((x, y), (json!(2.0), json!(2.5)));
        assert_eq!(tree_place(&path), "tree 0, node 1, t");
        assert_eq!(
            tree_place("ensemble.trees[2].threshold[7]"),
            "tree 2, node 7, threshold"
        );
        let (path, x, y) = first_difference(&json!([1, 2]), &json!([1, 2, 3]), "v").unwrap();
        assert_eq!(path, "v (length)");
        assert_eq!((x, y), (json!(2), json!(3)));
        assert!(first_difference(&a, &a, "x").is_none());
    }

    #[test]
    fn every_changed_config_key_is_named() {
        let a = json!({"model": {"params": {"max_depth": 3, "n_estimators": 5}}, "train": {"test_size": 0.2}});
        let b = json!({"model": {"params": {"max_depth": 4, "n_estimators": 5}}, "train": {"test_size": 0.3}});
        let mut out = Vec::new();
        all_leaf_differences(&a, &b, "metadata.config", &mut out);
        let paths: Vec<&str> = out.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.config.model.params.max_depth",
                "metadata.config.train.test_size"
            ]
        );
        let line = describe(&Difference {
            section: "config",
            path: out[0].0.clone(),
            release: out[0].1.clone(),
            now: out[0].2.clone(),
        });
        assert_eq!(line, "config   model.params.max_depth: release 3, now 4");
    }
}
