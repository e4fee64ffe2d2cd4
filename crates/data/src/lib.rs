//! Tabular data for predict-buy: CSV ingest, the column schema of the training config,
//! cleaning (parsing, imputation, outlier filtering) and a synthetic data generator.
//!
//! This crate is pure: it reads CSV from any `Read` (or a path, for convenience) and
//! knows nothing of models, HTTP, async runtimes or object stores. The fitted cleaning
//! rules ([`Cleaner`]) are plain serde values so that a model artifact can carry them and
//! apply exactly the same rules to a single request at inference time.
//!
//! ```no_run
//! use predict_buy_data::{Cleaner, DataConfig, Table};
//!
//! let table = Table::from_path("data/train.csv".as_ref())?;
//! let cleaner = Cleaner::fit(&table, &DataConfig::default())?;
//! let frame = cleaner.clean_training(&table)?;
//! println!("{} rows, {} features", frame.n_rows(), frame.features.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clean;
mod config;
mod error;
mod table;
mod value;

pub mod synth;

pub use clean::{
    Clean, CleanColumn, CleanFrame, Cleaner, CleaningProfile, ColumnProfile, ColumnRule,
    ColumnValues, OutlierBounds, RuleKind, TargetRule,
};
pub use config::{
    ColumnSpec, ColumnType, DataConfig, DataSource, Encode, Impute, Parse, Preset, Role, Scale,
};
pub use error::{DataError, FieldError};
pub use table::Table;
pub use value::{RawValue, parse_currency, parse_number};

/// The raw header of the insurance data set, in file order.
pub const INSURANCE_COLUMNS: [&str; 12] = [
    "id",
    "Gender",
    "Age",
    "HasDrivingLicense",
    "RegionID",
    "Switch",
    "VehicleAge",
    "PastAccident",
    "AnnualPremium",
    "SalesChannelID",
    "DaysSinceCreated",
    "Result",
];
