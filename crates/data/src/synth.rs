//! A deterministic generator of raw insurance rows that match the published facts of
//! the "Health Insurance Cross Sell Prediction" data (see DESIGN.md, "The data"): the
//! marginal rates, the buy rates per group, the missing-value rates and the dirty
//! formatting (`69.0`, `"£1,623.85 "`). Buying depends on the columns the way it does in
//! the real data, so a model trained here learns the same structure.

use std::io::Write;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

use crate::INSURANCE_COLUMNS;

/// Per-column probability that a value is missing, as seen in the real sample.
const MISSING: Missing = Missing {
    gender: 0.07,
    age: 0.06,
    licence: 0.08,
    region: 0.09,
    switch: 0.48,
    vehicle_age: 0.16,
    past_accident: 0.40,
};

struct Missing {
    gender: f64,
    age: f64,
    licence: f64,
    region: f64,
    switch: f64,
    vehicle_age: f64,
    past_accident: f64,
}

/// One generated row before it is written.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub male: Option<bool>,
    pub age: Option<u32>,
    pub licence: Option<bool>,
    pub region: Option<u32>,
    pub switch: Option<bool>,
    pub vehicle_age: Option<VehicleAge>,
    pub past_accident: Option<bool>,
    pub premium: f64,
    pub channel: u32,
    pub days: u32,
    pub bought: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleAge {
    UnderOne,
    OneToTwo,
    OverTwo,
}

impl VehicleAge {
    pub fn label(self) -> &'static str {
        match self {
            VehicleAge::UnderOne => "< 1 Year",
            VehicleAge::OneToTwo => "1-2 Year",
            VehicleAge::OverTwo => "> 2 Years",
        }
    }
}

/// Generates rows one at a time from a seed; the same seed gives the same rows.
pub struct Generator {
    rng: ChaCha8Rng,
    premium: LogNormal<f64>,
    next_id: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            // Median £1,729 for the rows above the floor puts the overall median near
            // £1,580 once 17% sit at the £131.50 floor.
            premium: LogNormal::new(1729f64.ln(), 0.36).expect("valid parameters"),
            next_id: 1,
        }
    }

    pub fn row(&mut self) -> Row {
        let r = &mut self.rng;
        let male = r.random_bool(0.54);
        let age = sample_age(r);
        let young = age < 30;
        let vehicle_age = {
            let u: f64 = r.random();
            let (under, mid) = if young { (0.85, 0.99) } else { (0.15, 0.93) };
            if u < under {
                VehicleAge::UnderOne
            } else if u < mid {
                VehicleAge::OneToTwo
            } else {
                VehicleAge::OverTwo
            }
        };
        let past_accident = r.random_bool(match vehicle_age {
            VehicleAge::UnderOne => 0.30,
            VehicleAge::OneToTwo => 0.66,
            VehicleAge::OverTwo => 0.90,
        });
        // The previously insured rarely had an accident on record, and almost never buy.
        let switch = r.random_bool(if past_accident { 0.02 } else { 0.92 });
        let region = {
            let u: f64 = r.random();
            if u < 0.28 {
                28
            } else if u < 0.37 {
                8
            } else {
                let mut g = r.random_range(0..51u32);
                if g >= 8 {
                    g += 1;
                }
                if g >= 28 {
                    g += 1;
                }
                g
            }
        };
        let channel = {
            let u: f64 = r.random();
            let (p152, p26, p124) = if young {
                (0.70, 0.08, 0.07)
            } else {
                (0.12, 0.30, 0.27)
            };
            if u < p152 {
                152
            } else if u < p152 + p26 {
                26
            } else if u < p152 + p26 + p124 {
                124
            } else if r.random_bool(0.4) {
                [160, 156, 122, 157, 154][r.random_range(0..5)]
            } else {
                r.random_range(1..=163)
            }
        };
        let premium = {
            let u: f64 = r.random();
            if u < 0.17 {
                131.5
            } else if u < 0.173 {
                // The long tail of very large premiums.
                r.random_range(5_000.0..27_000.0f64)
            } else {
                self.premium.sample(r).clamp(131.5, 27_000.0)
            }
        };
        let licence = !r.random_bool(0.002);
        let days = r.random_range(10..=299);

        let p_buy = if switch {
            0.0009
        } else if !past_accident {
            0.005
        } else {
            let base: f64 = match vehicle_age {
                VehicleAge::UnderOne => 0.17,
                VehicleAge::OneToTwo => 0.295,
                VehicleAge::OverTwo => 0.37,
            };
            let by_age = match age {
                ..30 => 0.75,
                30..=50 => 1.25,
                51..=60 => 0.95,
                _ => 0.6,
            };
            let by_gender = if male { 1.15 } else { 0.82 };
            let by_region = if region == 28 { 1.3 } else { 0.9 };
            let by_channel = match channel {
                152 | 160 => 0.45,
                26 | 124 => 1.2,
                _ => 1.0,
            };
            let by_licence = if licence { 1.0 } else { 0.3 };
            (base * by_age * by_gender * by_region * by_channel * by_licence).min(0.95)
        };
        let bought = r.random_bool(p_buy);

        let id = self.next_id;
        self.next_id += 1;
        let mut keep = |p: f64| !r.random_bool(p);
        Row {
            id,
            male: keep(MISSING.gender).then_some(male),
            age: keep(MISSING.age).then_some(age),
            licence: keep(MISSING.licence).then_some(licence),
            region: keep(MISSING.region).then_some(region),
            switch: keep(MISSING.switch).then_some(switch),
            vehicle_age: keep(MISSING.vehicle_age).then_some(vehicle_age),
            past_accident: keep(MISSING.past_accident).then_some(past_accident),
            premium: (premium * 20.0).round() / 20.0,
            channel,
            days,
            bought,
        }
    }
}

/// Ages 20–85 with a mass of young customers and a median near 36.
fn sample_age(r: &mut ChaCha8Rng) -> u32 {
    if r.random_bool(0.40) {
        let u: f64 = r.random();
        20 + (u * u * 10.0) as u32
    } else {
        let u: f64 = r.random();
        (30.0 + 56.0 * u.powf(1.3)).min(85.0) as u32
    }
}

/// Writes the CSV header of the raw schema.
pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", INSURANCE_COLUMNS.join(","))
}

/// Writes one row in the raw schema's dirty format.
pub fn write_row(out: &mut impl Write, row: &Row) -> std::io::Result<()> {
    write!(out, "{},", row.id)?;
    match row.male {
        Some(true) => out.write_all(b"Male,")?,
        Some(false) => out.write_all(b"Female,")?,
        None => out.write_all(b",")?,
    }
    write_float_int(out, row.age)?;
    write_float_int(out, row.licence.map(u32::from))?;
    write_float_int(out, row.region)?;
    write_float_int(out, row.switch.map(u32::from))?;
    if let Some(v) = row.vehicle_age {
        out.write_all(v.label().as_bytes())?;
    }
    out.write_all(b",")?;
    match row.past_accident {
        Some(true) => out.write_all(b"Yes,")?,
        Some(false) => out.write_all(b"No,")?,
        None => out.write_all(b",")?,
    }
    write_money(out, row.premium)?;
    writeln!(
        out,
        ",{},{},{}",
        row.channel,
        row.days,
        u8::from(row.bought)
    )
}

/// `69.0`, as pandas wrote integer columns that had missing values.
fn write_float_int(out: &mut impl Write, v: Option<u32>) -> std::io::Result<()> {
    match v {
        Some(v) => write!(out, "{v}.0,"),
        None => out.write_all(b","),
    }
}

/// `"£1,623.85 "`, or `£131.50 ` when no thousands separator forces quoting.
fn write_money(out: &mut impl Write, amount: f64) -> std::io::Result<()> {
    let pence = (amount * 100.0).round() as u64;
    let (pounds, pence) = (pence / 100, pence % 100);
    if pounds >= 1000 {
        write!(
            out,
            "\"£{},{:03}.{pence:02} \"",
            pounds / 1000,
            pounds % 1000
        )
    } else {
        write!(out, "£{pounds}.{pence:02} ")
    }
}

/// Writes `rows` rows to `train` and `test`, sending each row to the test file with
/// probability `test_fraction`.
pub fn write_split(
    seed: u64,
    rows: usize,
    test_fraction: f64,
    train: &mut impl Write,
    test: &mut impl Write,
) -> std::io::Result<(usize, usize)> {
    let mut generator = Generator::new(seed);
    let mut splitter = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT);
    write_header(train)?;
    write_header(test)?;
    let (mut n_train, mut n_test) = (0, 0);
    for _ in 0..rows {
        let row = generator.row();
        if splitter.random_bool(test_fraction) {
            write_row(test, &row)?;
            n_test += 1;
        } else {
            write_row(train, &row)?;
            n_train += 1;
        }
    }
    Ok((n_train, n_test))
}

/// Keeps the split's random stream independent of the rows' stream.
const SPLIT_SALT: u64 = 0x5eed_5911;
