use super::*;
use crate::config::{ColumnSpec, ColumnType, Impute};
use crate::{ColumnValues, DataConfig, Preset, Table};

/// A small raw-schema file with every kind of dirt the real data has.
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

fn table() -> Table {
    Table::from_reader(RAW.as_bytes(), "raw.csv").unwrap()
}

fn column<'a>(frame: &'a CleanFrame, name: &str) -> &'a ColumnValues {
    &frame
        .features
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .values
}

fn numbers(values: &ColumnValues) -> &[f64] {
    match values {
        ColumnValues::Numeric(v) => v,
        other => panic!("not numeric: {other:?}"),
    }
}

fn categories(values: &ColumnValues) -> &[String] {
    match values {
        ColumnValues::Categorical(v) => v,
        other => panic!("not categorical: {other:?}"),
    }
}

#[test]
fn preset_keeps_the_original_feature_set() {
    let t = table();
    let c = Cleaner::fit(&t, &DataConfig::default()).unwrap();
    let names: Vec<_> = c.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["Gender", "Age", "RegionID", "PastAccident", "AnnualPremium"]
    );
    assert_eq!(c.target.name, "Result");
    assert_eq!(c.target.positive, "1");
}

#[test]
fn preset_parses_premium_and_drops_outliers() {
    let t = table();
    let c = Cleaner::fit(&t, &DataConfig::default()).unwrap();
    let frame = c.clean_training(&t).unwrap();
    assert_eq!(
        frame.dropped_outliers, 1,
        "the £99,999 row is above Q3 + 1.5·IQR"
    );
    assert_eq!(frame.n_rows(), 6);
    let premium = numbers(column(&frame, "AnnualPremium"));
    assert_eq!(premium, [2630.35, 1671.55, 1929.40, 131.5, 1352.95, 1200.0]);
    // Evaluation keeps every row.
    assert_eq!(c.clean_evaluation(&t).unwrap().n_rows(), 7);
}

#[test]
fn preset_imputes_like_the_original() {
    let t = table();
    let c = Cleaner::fit(&t, &DataConfig::default()).unwrap();
    let frame = c.clean_evaluation(&t).unwrap();
    // Gender: most frequent (Female and Male tie 3–3; ties go to the smallest).
    assert_eq!(categories(column(&frame, "Gender"))[2], "Female");
    // Age: the median of the six known ages.
    assert_eq!(numbers(column(&frame, "Age"))[3], 36.5);
    // RegionID: most frequent.
    assert_eq!(numbers(column(&frame, "RegionID"))[4], 28.0);
    // PastAccident: the constant "Unknown".
    assert_eq!(categories(column(&frame, "PastAccident"))[3], "Unknown");
}

fn full_config() -> DataConfig {
    let yaml = "
columns:
  id: {role: drop}
  HasDrivingLicense: {type: numeric, impute: constant, fill_value: 1}
  Switch: {type: numeric, impute: constant, fill_value: -1}
  AnnualPremium: {parse: currency, outliers: iqr}
";
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn explicit_columns_impute_licence_and_switch() {
    let t = table();
    let c = Cleaner::fit(&t, &full_config()).unwrap();
    let frame = c.clean_evaluation(&t).unwrap();
    assert_eq!(numbers(column(&frame, "HasDrivingLicense"))[1], 1.0);
    assert_eq!(numbers(column(&frame, "Switch"))[2], -1.0);
    // Unlisted columns are inferred: VehicleAge is categorical, SalesChannelID numeric.
    assert!(matches!(
        column(&frame, "VehicleAge"),
        ColumnValues::Categorical(_)
    ));
    assert!(matches!(
        column(&frame, "SalesChannelID"),
        ColumnValues::Numeric(_)
    ));
    assert!(frame.features.iter().all(|f| f.name != "id"));
}

#[test]
fn money_is_inferred_without_a_parse_rule() {
    let t = table();
    let cfg = DataConfig {
        preset: Some(Preset::None),
        ..DataConfig::default()
    };
    let c = Cleaner::fit(&t, &cfg).unwrap();
    let rule = c
        .features
        .iter()
        .find(|f| f.name == "AnnualPremium")
        .unwrap();
    assert!(matches!(
        rule.kind,
        RuleKind::Numeric {
            parse: Parse::Currency,
            ..
        }
    ));
}

#[test]
fn bad_number_names_file_line_and_column() {
    let csv = "a,b,y\n1,x,0\n2,3,1\n";
    let t = Table::from_reader(csv.as_bytes(), "bad.csv").unwrap();
    let mut cols = std::collections::BTreeMap::new();
    cols.insert(
        "b".to_string(),
        ColumnSpec {
            kind: Some(ColumnType::Numeric),
            ..ColumnSpec::default()
        },
    );
    let cfg = DataConfig {
        columns: Some(cols),
        ..DataConfig::default()
    };
    let err = Cleaner::fit(&t, &cfg).unwrap_err().to_string();
    assert_eq!(err, "bad.csv line 2, column `b`: `x` is not a number");
}

#[test]
fn missing_target_column_is_named() {
    let t = Table::from_reader("a,b\n1,0\n2,1\n".as_bytes(), "t.csv").unwrap();
    let cfg = DataConfig {
        target: Some("Result".into()),
        ..DataConfig::default()
    };
    let err = Cleaner::fit(&t, &cfg).unwrap_err().to_string();
    assert!(
        err.contains("column `Result` named in data.target is not in the header (a,b)"),
        "{err}"
    );
}

#[test]
fn string_labels_need_a_positive_label() {
    let t = Table::from_reader("a,label\n1,cat\n2,dog\n".as_bytes(), "t.csv").unwrap();
    let err = Cleaner::fit(&t, &DataConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("set data.positive_label"), "{err}");
    let cfg = DataConfig {
        positive_label: Some("dog".into()),
        ..DataConfig::default()
    };
    let c = Cleaner::fit(&t, &cfg).unwrap();
    assert_eq!(c.clean_training(&t).unwrap().target, [0, 1]);
    let t = Table::from_reader("a,bought\n1,No\n2,Yes\n".as_bytes(), "t.csv").unwrap();
    let c = Cleaner::fit(&t, &DataConfig::default()).unwrap();
    assert_eq!(c.clean_training(&t).unwrap().target, [0, 1]);
}

#[test]
fn constant_impute_needs_a_fill_value() {
    let t = table();
    let mut cols = std::collections::BTreeMap::new();
    cols.insert(
        "Age".to_string(),
        ColumnSpec {
            impute: Some(Impute::Constant),
            ..ColumnSpec::default()
        },
    );
    let cfg = DataConfig {
        columns: Some(cols),
        ..DataConfig::default()
    };
    let err = Cleaner::fit(&t, &cfg).unwrap_err().to_string();
    assert_eq!(
        err,
        "config key `data.columns.Age.fill_value`: impute: constant needs a fill_value"
    );
}

#[test]
fn records_report_every_bad_field() {
    let t = table();
    let c = Cleaner::fit(&t, &DataConfig::default()).unwrap();
    // Gender, Age, RegionID, PastAccident, AnnualPremium
    let values = [
        RawValue::text("Male"),
        RawValue::Number(130.0),
        RawValue::text("28"),
        RawValue::Missing,
        RawValue::text("£-5"),
    ];
    let errs = c.clean_record(&values).unwrap_err();
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["Age", "AnnualPremium"]);
    assert!(errs[0].reason.contains("above the maximum 120"));
    let ok = [
        RawValue::text("Male"),
        RawValue::Number(44.0),
        RawValue::text("28.0"),
        RawValue::Missing,
        RawValue::text("£2,305.40"),
    ];
    let clean = c.clean_record(&ok).unwrap();
    assert_eq!(clean[4], Clean::Num(2305.4));
    assert_eq!(clean[3], Clean::Cat("Unknown".into()));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn money_round_trips(pence in 0u64..10_000_000_000) {
            let amount = pence as f64 / 100.0;
            let mut out = Vec::new();
            crate::synth::write_row(&mut out, &crate::synth::Row {
                id: 1, male: None, age: None, licence: None, region: None, switch: None,
                vehicle_age: None, past_accident: None, premium: amount, channel: 1, days: 10, bought: false,
            }).unwrap();
            let text = String::from_utf8(out).unwrap();
            let t = Table::from_reader(format!("{}\n{text}", crate::INSURANCE_COLUMNS.join(",")).as_bytes(), "p.csv").unwrap();
            let parsed = crate::parse_currency(t.cell(0, 8)).unwrap();
            prop_assert!((parsed - amount).abs() < 1e-6, "{} vs {}", parsed, amount);
        }

        #[test]
        fn cleaning_never_panics_on_any_cell(cell in ".{0,12}") {
            let csv = format!("x,y\n\"{}\",0\n1,1\n", cell.replace('"', "\"\""));
            if let Ok(t) = Table::from_reader(csv.as_bytes(), "p.csv")
                && let Ok(c) = Cleaner::fit(&t, &DataConfig::default()) {
                    let _ = c.clean_training(&t);
                }
        }
    }
}
