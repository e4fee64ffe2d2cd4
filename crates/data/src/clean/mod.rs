use std::borrow::Cow;
use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{ColumnSpec, ColumnType, DataConfig, Impute, Outliers, Parse, Role, Scale};
use crate::value::{normalize_category, parse_currency, parse_number};
use crate::{DataError, FieldError, RawValue, Table};

/// Cleaning rules fitted on training data: which columns are features, how each is
/// parsed and imputed, and how the target is read. It is serialisable so that a model
/// artifact applies the very same rules to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cleaner {
    pub features: Vec<ColumnRule>,
    pub target: TargetRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnRule {
    pub name: String,
    #[serde(flatten)]
    pub kind: RuleKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RuleKind {
    Numeric {
        parse: Parse,
        impute: f64,
        min: Option<f64>,
        max: Option<f64>,
        outliers: Option<OutlierBounds>,
        scale: Scale,
    },
    Categorical {
        impute: String,
    },
}

/// Training rows whose value falls outside are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutlierBounds {
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRule {
    pub name: String,
    /// The raw value (normalised like a category) that means class 1.
    pub positive: String,
}

/// A cleaned value of one column of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Clean<'a> {
    Num(f64),
    Cat(Cow<'a, str>),
}

/// Cleaned training or evaluation data: typed feature columns and a 0/1 target.
#[derive(Debug, Clone)]
pub struct CleanFrame {
    pub features: Vec<CleanColumn>,
    pub target: Vec<u8>,
    /// Rows removed by outlier rules.
    pub dropped_outliers: usize,
}

#[derive(Debug, Clone)]
pub struct CleanColumn {
    pub name: String,
    pub values: ColumnValues,
}

#[derive(Debug, Clone)]
pub enum ColumnValues {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
}

impl CleanFrame {
    pub fn n_rows(&self) -> usize {
        self.target.len()
    }
}

impl ColumnRule {
    pub fn scale(&self) -> Scale {
        match self.kind {
            RuleKind::Numeric { scale, .. } => scale,
            RuleKind::Categorical { .. } => Scale::None,
        }
    }

    /// Cleans one raw value: parses it, checks its range and imputes it when missing.
    /// The error is the reason only; callers add the field, file or line.
    pub fn clean<'a>(&'a self, value: &'a RawValue<'a>) -> Result<Clean<'a>, String> {
        match &self.kind {
            RuleKind::Numeric {
                parse,
                impute,
                min,
                max,
                ..
            } => {
                let v = match value {
                    RawValue::Missing => return Ok(Clean::Num(*impute)),
                    RawValue::Number(v) if !v.is_finite() => {
                        return Err(format!("{v} is not a finite number"));
                    }
                    RawValue::Number(v) => *v,
                    RawValue::Text(s) if s.trim().is_empty() => return Ok(Clean::Num(*impute)),
                    RawValue::Text(s) => parse_numeric(s, *parse)?,
                };
                check_range(v, *min, *max)?;
                Ok(Clean::Num(v))
            }
            RuleKind::Categorical { impute } => Ok(Clean::Cat(match value {
                RawValue::Missing => Cow::Borrowed(impute.as_str()),
                RawValue::Number(v) if !v.is_finite() => {
                    return Err(format!("{v} is not a valid category"));
                }
                RawValue::Number(v) if v.fract() == 0.0 && v.abs() < 1e15 => {
                    Cow::Owned(format!("{}", *v as i64))
                }
                RawValue::Number(v) => Cow::Owned(v.to_string()),
                RawValue::Text(s) if s.trim().is_empty() => Cow::Borrowed(impute.as_str()),
                RawValue::Text(s) => normalize_category(s),
            })),
        }
    }
}

fn parse_numeric(s: &str, parse: Parse) -> Result<f64, String> {
    let parsed = match parse {
        Parse::Number => parse_number(s),
        Parse::Currency => parse_currency(s),
    };
    parsed.ok_or_else(|| match parse {
        Parse::Number => format!("`{}` is not a number", s.trim()),
        Parse::Currency => format!("`{}` is not an amount of money", s.trim()),
    })
}

fn check_range(v: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    if let Some(lo) = min.filter(|lo| v < *lo) {
        return Err(format!("{v} is below the minimum {lo}"));
    }
    if let Some(hi) = max.filter(|hi| v > *hi) {
        return Err(format!("{v} is above the maximum {hi}"));
    }
    Ok(())
}

impl Cleaner {
    /// Resolves the config against the table's header and fits imputation values and
    /// outlier bounds on the table's rows.
    pub fn fit(table: &Table, config: &DataConfig) -> Result<Self, DataError> {
        let source = table.source_name();
        let specs = config.resolved_columns(table.headers());
        check_listed_columns_exist(table, config, &specs)?;

        let target_name = target_column(table, config, &specs)?;
        let target_idx = table.column_index(&target_name).expect("checked above");
        let positive = positive_label(table, target_idx, config.positive_label.as_deref())?;

        let mut to_fit = Vec::new();
        for (idx, name) in table.headers().iter().enumerate() {
            if idx == target_idx {
                continue;
            }
            let spec = specs.get(name).cloned().unwrap_or_default();
            match spec.role {
                Role::Drop => continue,
                Role::Target => {
                    return Err(DataError::Config {
                        key: format!("data.columns.{name}.role"),
                        reason: format!("only one target column is allowed; it is `{target_name}`"),
                    });
                }
                Role::Feature => {}
            }
            to_fit.push((idx, spec));
        }
        // One column per task, on every core; the first error in column order wins.
        let features = to_fit
            .par_iter()
            .map(|(idx, spec)| fit_column(table, *idx, spec))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        if features.is_empty() {
            return Err(DataError::Invalid {
                source_name: source.to_string(),
                reason: "no feature columns remain after dropping; check data.columns".into(),
            });
        }
        Ok(Self {
            features,
            target: TargetRule {
                name: target_name,
                positive,
            },
        })
    }

    /// Cleans training rows: every feature parsed and imputed, outlier rows dropped.
    pub fn clean_training(&self, table: &Table) -> Result<CleanFrame, DataError> {
        self.clean_table(table, true)
    }

    /// Cleans evaluation rows: like training, but no row is dropped, because a served
    /// model sees outliers too.
    pub fn clean_evaluation(&self, table: &Table) -> Result<CleanFrame, DataError> {
        self.clean_table(table, false)
    }

    /// Cleans feature rows that have no target (batch prediction input).
    pub fn clean_features(&self, table: &Table) -> Result<Vec<CleanColumn>, DataError> {
        let keep = vec![true; table.n_rows()];
        self.features
            .iter()
            .map(|rule| self.clean_column(table, rule, &keep))
            .collect()
    }

    /// Cleans one record given in the order of [`Cleaner::features`]. Reports every bad
    /// field, not just the first.
    pub fn clean_record<'a>(
        &'a self,
        values: &'a [RawValue<'a>],
    ) -> Result<Vec<Clean<'a>>, Vec<FieldError>> {
        let mut out = Vec::with_capacity(self.features.len());
        let mut errors = Vec::new();
        for (rule, v) in self.features.iter().zip(values) {
            match rule.clean(v) {
                Ok(c) => out.push(c),
                Err(reason) => errors.push(FieldError::new(&rule.name, reason)),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn clean_table(&self, table: &Table, drop_outliers: bool) -> Result<CleanFrame, DataError> {
        let target = self.read_target(table)?;
        let mut keep = vec![true; table.n_rows()];
        if drop_outliers {
            self.mark_outliers(table, &mut keep)?;
        }
        // One column per task, on every core; the first error in column order wins,
        // as it would one column after another.
        let features = self
            .features
            .par_iter()
            .map(|rule| self.clean_column(table, rule, &keep))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let target: Vec<u8> = target
            .into_iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(t, _)| t)
            .collect();
        let dropped_outliers = keep.iter().filter(|k| !**k).count();
        if target.is_empty() {
            return Err(DataError::Invalid {
                source_name: table.source_name().to_string(),
                reason: "every row was dropped as an outlier".into(),
            });
        }
        Ok(CleanFrame {
            features,
            target,
            dropped_outliers,
        })
    }

    fn column_of(&self, table: &Table, name: &str) -> Result<usize, DataError> {
        table
            .column_index(name)
            .ok_or_else(|| DataError::MissingColumn {
                source_name: table.source_name().to_string(),
                column: name.to_string(),
                key: "the model's input schema".into(),
                header: table.headers().join(","),
            })
    }

    fn read_target(&self, table: &Table) -> Result<Vec<u8>, DataError> {
        let idx = self.column_of(table, &self.target.name)?;
        table
            .column(idx)
            .enumerate()
            .map(|(row, cell)| {
                let v = normalize_category(cell);
                if v.is_empty() {
                    return Err(DataError::BadValue {
                        source_name: table.source_name().to_string(),
                        line: table.line(row),
                        column: self.target.name.clone(),
                        reason: "the target is empty".into(),
                    });
                }
                Ok(u8::from(*v == *self.target.positive))
            })
            .collect()
    }

    fn mark_outliers(&self, table: &Table, keep: &mut [bool]) -> Result<(), DataError> {
        for rule in &self.features {
            let RuleKind::Numeric {
                outliers: Some(b), ..
            } = &rule.kind
            else {
                continue;
            };
            let idx = self.column_of(table, &rule.name)?;
            for (row, cell) in table.column(idx).enumerate() {
                let raw = RawValue::text(cell);
                if let Ok(Clean::Num(v)) = rule.clean(&raw)
                    && (v < b.low || v > b.high)
                {
                    keep[row] = false;
                }
            }
        }
        Ok(())
    }

    fn clean_column(
        &self,
        table: &Table,
        rule: &ColumnRule,
        keep: &[bool],
    ) -> Result<CleanColumn, DataError> {
        let idx = self.column_of(table, &rule.name)?;
        let bad = |row: usize, reason: String| DataError::BadValue {
            source_name: table.source_name().to_string(),
            line: table.line(row),
            column: rule.name.clone(),
            reason,
        };
        let cells = table.column(idx).enumerate().filter(|(row, _)| keep[*row]);
        let values = match &rule.kind {
            RuleKind::Numeric { .. } => ColumnValues::Numeric(
                cells
                    .map(|(row, cell)| match rule.clean(&RawValue::text(cell)) {
                        Ok(Clean::Num(v)) => Ok(v),
                        Ok(Clean::Cat(_)) => unreachable!("numeric rules yield numbers"),
                        Err(reason) => Err(bad(row, reason)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            RuleKind::Categorical { .. } => ColumnValues::Categorical(
                cells
                    .map(|(row, cell)| match rule.clean(&RawValue::text(cell)) {
                        Ok(Clean::Cat(c)) => Ok(c.into_owned()),
                        Ok(Clean::Num(_)) => unreachable!("categorical rules yield categories"),
                        Err(reason) => Err(bad(row, reason)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(CleanColumn {
            name: rule.name.clone(),
            values,
        })
    }
}

fn check_listed_columns_exist(
    table: &Table,
    config: &DataConfig,
    specs: &std::collections::BTreeMap<String, ColumnSpec>,
) -> Result<(), DataError> {
    let explicit = config.columns.iter().flat_map(|c| c.keys());
    for name in explicit {
        if table.column_index(name).is_none() {
            return Err(DataError::MissingColumn {
                source_name: table.source_name().to_string(),
                column: name.clone(),
                key: format!("data.columns.{name}"),
                header: table.headers().join(","),
            });
        }
    }
    debug_assert!(specs.len() >= config.columns.as_ref().map_or(0, |c| c.len()));
    Ok(())
}

fn target_column(
    table: &Table,
    config: &DataConfig,
    specs: &std::collections::BTreeMap<String, ColumnSpec>,
) -> Result<String, DataError> {
    let from_role: Vec<&String> = specs
        .iter()
        .filter(|(name, s)| s.role == Role::Target && table.column_index(name).is_some())
        .map(|(n, _)| n)
        .collect();
    let name = match (&config.target, from_role.as_slice()) {
        (Some(t), _) => t.clone(),
        (None, [one]) => (*one).clone(),
        (None, []) => table
            .headers()
            .last()
            .expect("tables have a header")
            .clone(),
        (None, many) => {
            return Err(DataError::Config {
                key: "data.columns".into(),
                reason: format!(
                    "several columns have role: target ({}); set data.target",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    };
    if table.column_index(&name).is_none() {
        return Err(DataError::MissingColumn {
            source_name: table.source_name().to_string(),
            column: name,
            key: "data.target".into(),
            header: table.headers().join(","),
        });
    }
    Ok(name)
}

/// Decides which target value is class 1: the configured label, else the obvious one
/// of a two-valued column (`1`, `yes`, `true`).
fn positive_label(
    table: &Table,
    idx: usize,
    configured: Option<&str>,
) -> Result<String, DataError> {
    let column = &table.headers()[idx];
    let mut distinct: Vec<String> = Vec::new();
    for cell in table.column(idx) {
        let v = normalize_category(cell);
        if !v.is_empty() && !distinct.iter().any(|d| *d == *v) {
            distinct.push(v.into_owned());
            if distinct.len() > 2 {
                break;
            }
        }
    }
    let err = |reason: String| DataError::Target {
        source_name: table.source_name().to_string(),
        column: column.clone(),
        reason,
    };
    if let Some(label) = configured {
        let label = normalize_category(label).into_owned();
        if distinct.len() > 2 {
            return Err(err(format!(
                "has more than two values ({}, …); only binary targets are supported",
                distinct.join(", ")
            )));
        }
        if !distinct.contains(&label) {
            return Err(err(format!(
                "data.positive_label `{label}` never occurs (values: {})",
                distinct.join(", ")
            )));
        }
        return Ok(label);
    }
    if distinct.len() > 2 {
        return Err(err(format!(
            "has more than two values ({}, …); only binary targets are supported",
            distinct.join(", ")
        )));
    }
    if distinct.len() < 2 {
        return Err(err(format!(
            "has a single value ({}); a classifier needs both classes",
            distinct.join(", ")
        )));
    }
    for candidate in ["1", "yes", "true", "y"] {
        if let Some(d) = distinct.iter().find(|d| d.eq_ignore_ascii_case(candidate)) {
            return Ok(d.clone());
        }
    }
    Err(err(format!(
        "cannot tell which of {} is the positive class; set data.positive_label",
        distinct.join(" and ")
    )))
}

fn fit_column(table: &Table, idx: usize, spec: &ColumnSpec) -> Result<ColumnRule, DataError> {
    let name = table.headers()[idx].clone();
    let key = |k: &str| format!("data.columns.{name}.{k}");
    let (kind, inferred_parse) = match spec.kind {
        Some(k) => (k, spec.parse.unwrap_or_default()),
        None => infer_type(table, idx, spec.parse),
    };
    let rule = match kind {
        ColumnType::Numeric => {
            let parse = spec.parse.unwrap_or(inferred_parse);
            let mut values = Vec::with_capacity(table.n_rows());
            for (row, cell) in table.column(idx).enumerate() {
                if cell.trim().is_empty() {
                    continue;
                }
                let v = parse_numeric(cell, parse)
                    .and_then(|v| check_range(v, spec.min, spec.max).map(|_| v))
                    .map_err(|reason| DataError::BadValue {
                        source_name: table.source_name().to_string(),
                        line: table.line(row),
                        column: name.clone(),
                        reason,
                    })?;
                values.push(v);
            }
            let impute = match spec.impute.unwrap_or(Impute::Median) {
                Impute::Constant => match &spec.fill_value {
                    Some(v) => v
                        .as_f64()
                        .or_else(|| v.as_str().and_then(parse_number))
                        .ok_or_else(|| DataError::Config {
                            key: key("fill_value"),
                            reason: format!("{v} is not a number"),
                        })?,
                    None => {
                        return Err(DataError::Config {
                            key: key("fill_value"),
                            reason: "impute: constant needs a fill_value".into(),
                        });
                    }
                },
                _ if values.is_empty() => {
                    return Err(DataError::Invalid {
                        source_name: table.source_name().to_string(),
                        reason: format!("column `{name}` has no values to impute from"),
                    });
                }
                Impute::Median => quantile(&mut values.clone(), 0.5),
                Impute::Mean => values.iter().sum::<f64>() / values.len() as f64,
                Impute::MostFrequent => most_frequent_number(&values),
            };
            let outliers = match spec.outliers {
                Some(Outliers::Iqr) if !values.is_empty() => {
                    let mut sorted = values.clone();
                    let q1 = quantile(&mut sorted, 0.25);
                    let q3 = quantile(&mut sorted, 0.75);
                    let iqr = q3 - q1;
                    Some(OutlierBounds {
                        low: q1 - 1.5 * iqr,
                        high: q3 + 1.5 * iqr,
                    })
                }
                _ => None,
            };
            if spec.encode.is_some() {
                return Err(DataError::Config {
                    key: key("encode"),
                    reason: "only categorical columns are encoded".into(),
                });
            }
            RuleKind::Numeric {
                parse,
                impute,
                min: spec.min,
                max: spec.max,
                outliers,
                scale: spec.scale.unwrap_or_default(),
            }
        }
        ColumnType::Categorical => {
            for (k, set) in [
                ("parse", spec.parse.is_some()),
                ("outliers", spec.outliers.is_some()),
                ("min", spec.min.is_some()),
                ("max", spec.max.is_some()),
            ] {
                if set {
                    return Err(DataError::Config {
                        key: key(k),
                        reason: "applies to numeric columns only".into(),
                    });
                }
            }
            if matches!(spec.scale, Some(s) if s != Scale::None) {
                return Err(DataError::Config {
                    key: key("scale"),
                    reason: "applies to numeric columns only".into(),
                });
            }
            let impute = match spec.impute.unwrap_or(Impute::MostFrequent) {
                Impute::Constant => match &spec.fill_value {
                    Some(serde_json::Value::String(s)) => normalize_category(s).into_owned(),
                    Some(v @ serde_json::Value::Number(_)) => {
                        normalize_category(&v.to_string()).into_owned()
                    }
                    Some(v) => {
                        return Err(DataError::Config {
                            key: key("fill_value"),
                            reason: format!("{v} is not a category"),
                        });
                    }
                    None => {
                        return Err(DataError::Config {
                            key: key("fill_value"),
                            reason: "impute: constant needs a fill_value".into(),
                        });
                    }
                },
                Impute::MostFrequent => {
                    most_frequent_category(table, idx).ok_or_else(|| DataError::Invalid {
                        source_name: table.source_name().to_string(),
                        reason: format!("column `{name}` has no values to impute from"),
                    })?
                }
                other => {
                    return Err(DataError::Config {
                        key: key("impute"),
                        reason: format!("{other:?} needs numbers; use most_frequent or constant for a categorical column").to_lowercase(),
                    });
                }
            };
            RuleKind::Categorical { impute }
        }
    };
    Ok(ColumnRule { name, kind: rule })
}

/// Numeric if every non-empty value is a number; money if every value parses as money
/// and at least one carries a currency sign or a thousands separator.
fn infer_type(table: &Table, idx: usize, parse: Option<Parse>) -> (ColumnType, Parse) {
    let mut all_numbers = true;
    let mut all_money = true;
    let mut any = false;
    for cell in table.column(idx) {
        if cell.trim().is_empty() {
            continue;
        }
        any = true;
        if all_numbers && parse_number(cell).is_none() {
            all_numbers = false;
        }
        if all_money && parse_currency(cell).is_none() {
            all_money = false;
        }
        if !all_numbers && !all_money {
            break;
        }
    }
    match (any, all_numbers, all_money, parse) {
        (_, _, _, Some(p)) => (ColumnType::Numeric, p),
        (true, true, _, None) => (ColumnType::Numeric, Parse::Number),
        (true, false, true, None) => (ColumnType::Numeric, Parse::Currency),
        _ => (ColumnType::Categorical, Parse::Number),
    }
}

/// Linear-interpolated quantile, as pandas and numpy compute it by default.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// The most frequent value; ties go to the smallest, as pandas' `mode()[0]` does.
fn most_frequent_number(values: &[f64]) -> f64 {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for v in values {
        *counts.entry(v.to_bits()).or_default() += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    counts
        .into_iter()
        .filter(|(_, c)| *c == best)
        .map(|(b, _)| f64::from_bits(b))
        .min_by(f64::total_cmp)
        .unwrap_or(0.0)
}

fn most_frequent_category(table: &Table, idx: usize) -> Option<String> {
    let mut counts: HashMap<Cow<'_, str>, usize> = HashMap::new();
    for cell in table.column(idx) {
        let v = normalize_category(cell);
        if !v.is_empty() {
            *counts.entry(v).or_default() += 1;
        }
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .filter(|(_, c)| *c == best)
        .map(|(v, _)| v.into_owned())
        .min()
}

mod profile;
pub use profile::{CleaningProfile, ColumnProfile};

#[cfg(test)]
mod tests;
