//! What cleaning did to a table, column by column: how much was missing, what filled
//! it, and which rows the outlier rules removed. A model report shows this beside the
//! curves, because a good score on half-imputed data means something else.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Clean, Cleaner, OutlierBounds, RuleKind};
use crate::config::{DataConfig, Impute, Role};
use crate::{RawValue, Table};

/// One feature column as cleaning saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    /// Empty cells.
    pub missing: usize,
    /// `missing / rows`.
    pub missing_rate: f64,
    /// `median`, `mean`, `most_frequent` or `constant`.
    pub imputed_with: String,
    /// The value that fills a missing cell, as text.
    pub fill_value: String,
    pub outlier_bounds: Option<OutlierBounds>,
    /// Rows outside this column's outlier bounds (a row may count for several columns).
    pub outliers: usize,
}

/// A table's cleaning at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleaningProfile {
    pub rows: usize,
    pub columns: Vec<ColumnProfile>,
    /// Columns of the file the model does not use (dropped by config or preset).
    pub dropped_columns: Vec<String>,
}

impl Cleaner {
    /// Profiles `table` against these fitted rules. `config` names the imputation
    /// method, which the fitted rule keeps only as a value. A column the rules need but
    /// the table lacks is reported as wholly missing rather than refused: profiling
    /// describes, [`Cleaner::clean_training`] is where a missing column fails.
    pub fn profile(&self, table: &Table, config: &DataConfig) -> CleaningProfile {
        let rows = table.n_rows();
        let specs = config.resolved_columns(table.headers());
        // One column per task, on every core: each reads all its cells again.
        let columns = self
            .features
            .par_iter()
            .map(|rule| {
                let spec = specs.get(&rule.name);
                let configured = spec.and_then(|s| s.impute);
                let (kind, imputed_with, fill_value, bounds) = match &rule.kind {
                    RuleKind::Numeric {
                        impute, outliers, ..
                    } => (
                        "numeric",
                        configured.unwrap_or(Impute::Median),
                        format!("{impute}"),
                        *outliers,
                    ),
                    RuleKind::Categorical { impute } => (
                        "categorical",
                        configured.unwrap_or(Impute::MostFrequent),
                        impute.clone(),
                        None,
                    ),
                };
                let (missing, outliers) = match table.column_index(&rule.name) {
                    Some(idx) => count_column(table, idx, rule, bounds),
                    None => (rows, 0),
                };
                ColumnProfile {
                    name: rule.name.clone(),
                    kind: kind.into(),
                    missing,
                    missing_rate: if rows == 0 {
                        0.0
                    } else {
                        missing as f64 / rows as f64
                    },
                    imputed_with: impute_name(imputed_with).into(),
                    fill_value,
                    outlier_bounds: bounds,
                    outliers,
                }
            })
            .collect();
        let dropped_columns = table
            .headers()
            .iter()
            .filter(|h| {
                **h != self.target.name
                    && (specs.get(*h).is_some_and(|s| s.role == Role::Drop)
                        || !self.features.iter().any(|r| &r.name == *h))
            })
            .cloned()
            .collect();
        CleaningProfile {
            rows,
            columns,
            dropped_columns,
        }
    }
}

fn count_column(
    table: &Table,
    idx: usize,
    rule: &super::ColumnRule,
    bounds: Option<OutlierBounds>,
) -> (usize, usize) {
    let (mut missing, mut outliers) = (0, 0);
    for cell in table.column(idx) {
        if cell.trim().is_empty() {
            missing += 1;
            continue;
        }
        if let Some(b) = bounds
            && let Ok(Clean::Num(v)) = rule.clean(&RawValue::text(cell))
            && (v < b.low || v > b.high)
        {
            outliers += 1;
        }
    }
    (missing, outliers)
}

fn impute_name(i: Impute) -> &'static str {
    match i {
        Impute::Median => "median",
        Impute::Mean => "mean",
        Impute::MostFrequent => "most_frequent",
        Impute::Constant => "constant",
    }
}

#[cfg(test)]
mod tests {
    use crate::{Cleaner, DataConfig, Table};

    const RAW: &str = "\
id,Gender,Age,HasDrivingLicense,RegionID,Switch,VehicleAge,PastAccident,AnnualPremium,SalesChannelID,DaysSinceCreated,Result
1,Male,44.0,1.0,28.0,0.0,> 2 Years,Yes,\"£2,630.35 \",26,217,1
2,Male,76.0,,3.0,0.0,1-2 Year,No,\"£1,671.55 \",26,183,0
3,,47.0,1.0,28.0,,> 2 Years,Yes,\"£1,929.40 \",26,27,1
4,Female,,1.0,11.0,1.0,< 1 Year,,£131.50 ,152,203,0
5,Female,29.0,1.0,,1.0,< 1 Year,No,\"£1,352.95 \",152,39,0
6,Female,21.0,0.0,3.0,1.0,,No,\"£99,999.00 \",160,176,0
7,Male,25.0,1.0,28.0,0.0,< 1 Year,Yes,\"£1,200.00 \",152,50,0
";

    #[test]
    fn counts_missing_cells_methods_and_outliers() {
        let t = Table::from_reader(RAW.as_bytes(), "raw.csv").unwrap();
        let config = DataConfig::default();
        let p = Cleaner::fit(&t, &config).unwrap().profile(&t, &config);
        assert_eq!(p.rows, 7);
        let summary: Vec<_> = p
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.missing,
                    c.imputed_with.as_str(),
                    c.fill_value.as_str(),
                    c.outliers,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("Gender", 1, "most_frequent", "Female", 0),
                ("Age", 1, "median", "36.5", 0),
                ("RegionID", 1, "most_frequent", "28", 0),
                ("PastAccident", 1, "constant", "Unknown", 0),
                // Only £99,999 lies beyond Q3 + 1.5 IQR of the premiums.
                ("AnnualPremium", 0, "median", "1671.55", 1),
            ]
        );
        assert!((p.columns[0].missing_rate - 1.0 / 7.0).abs() < 1e-12);
        assert_eq!(
            p.dropped_columns,
            [
                "id",
                "HasDrivingLicense",
                "Switch",
                "VehicleAge",
                "SalesChannelID",
                "DaysSinceCreated"
            ]
        );
    }

    #[test]
    fn a_column_absent_from_the_table_counts_as_missing() {
        let t = Table::from_reader(RAW.as_bytes(), "raw.csv").unwrap();
        let config = DataConfig::default();
        let cleaner = Cleaner::fit(&t, &config).unwrap();
        let other =
            Table::from_reader("Gender,Result\nMale,1\nFemale,0\n".as_bytes(), "x.csv").unwrap();
        let p = cleaner.profile(&other, &config);
        let age = p.columns.iter().find(|c| c.name == "Age").unwrap();
        assert_eq!((age.missing, age.missing_rate), (2, 1.0));
    }
}
