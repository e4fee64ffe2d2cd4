//! The generator must match the published facts of the real data (DESIGN.md, "The
//! data"): every rate within ±2 points.

use predict_buy_data::synth::{Generator, VehicleAge};
use predict_buy_data::{Table, parse_currency};

const N: usize = 200_000;

struct Rate {
    hits: usize,
    total: usize,
}

impl Rate {
    fn new() -> Self {
        Self { hits: 0, total: 0 }
    }
    fn add(&mut self, hit: bool) {
        self.total += 1;
        self.hits += usize::from(hit);
    }
    fn pct(&self) -> f64 {
        100.0 * self.hits as f64 / self.total as f64
    }
}

/// Collects every rate that is off, so one run shows them all.
fn near(misses: &mut Vec<String>, name: &str, got: f64, want: f64) {
    if (got - want).abs() > 2.0 {
        misses.push(format!(
            "{name}: {got:.2}% is not within 2 points of {want}%"
        ));
    }
}

#[test]
fn rates_match_the_published_facts() {
    let mut g = Generator::new(7);
    let rows: Vec<_> = (0..N).map(|_| g.row()).collect();
    let mut misses = Vec::new();
    let rate = |sel: &dyn Fn(&predict_buy_data::synth::Row) -> Option<bool>| {
        let mut r = Rate::new();
        rows.iter().filter_map(sel).for_each(|h| r.add(h));
        r.pct()
    };
    near(&mut misses, "buyers", rate(&|r| Some(r.bought)), 12.3);
    near(&mut misses, "male", rate(&|r| r.male), 54.0);
    near(
        &mut misses,
        "buy | male",
        rate(&|r| r.male.filter(|m| *m).map(|_| r.bought)),
        13.8,
    );
    near(
        &mut misses,
        "buy | female",
        rate(&|r| r.male.filter(|m| !*m).map(|_| r.bought)),
        10.4,
    );
    near(&mut misses, "licence", rate(&|r| r.licence), 99.8);
    near(
        &mut misses,
        "region 28",
        rate(&|r| r.region.map(|x| x == 28)),
        28.0,
    );
    near(
        &mut misses,
        "region 8",
        rate(&|r| r.region.map(|x| x == 8)),
        9.0,
    );
    near(&mut misses, "switch", rate(&|r| r.switch), 46.0);
    near(
        &mut misses,
        "buy | switch",
        rate(&|r| r.switch.filter(|s| *s).map(|_| r.bought)),
        0.09,
    );
    near(
        &mut misses,
        "buy | no switch",
        rate(&|r| r.switch.filter(|s| !*s).map(|_| r.bought)),
        22.5,
    );
    for (v, share, buy) in [
        (VehicleAge::UnderOne, 43.0, 4.4),
        (VehicleAge::OneToTwo, 53.0, 17.4),
        (VehicleAge::OverTwo, 4.0, 29.4),
    ] {
        near(
            &mut misses,
            v.label(),
            rate(&|r| r.vehicle_age.map(|x| x == v)),
            share,
        );
        near(
            &mut misses,
            "buy | vehicle age",
            rate(&|r| r.vehicle_age.filter(|x| *x == v).map(|_| r.bought)),
            buy,
        );
    }
    near(
        &mut misses,
        "past accident",
        rate(&|r| r.past_accident),
        50.5,
    );
    near(
        &mut misses,
        "buy | accident",
        rate(&|r| r.past_accident.filter(|p| *p).map(|_| r.bought)),
        23.8,
    );
    near(
        &mut misses,
        "buy | no accident",
        rate(&|r| r.past_accident.filter(|p| !*p).map(|_| r.bought)),
        0.5,
    );
    near(
        &mut misses,
        "premium floor",
        rate(&|r| Some(r.premium == 131.5)),
        17.0,
    );
    near(
        &mut misses,
        "channel 152",
        rate(&|r| Some(r.channel == 152)),
        35.0,
    );
    near(
        &mut misses,
        "channel 26",
        rate(&|r| Some(r.channel == 26)),
        21.0,
    );
    near(
        &mut misses,
        "channel 124",
        rate(&|r| Some(r.channel == 124)),
        19.0,
    );
    // Missing values.
    near(
        &mut misses,
        "gender missing",
        rate(&|r| Some(r.male.is_none())),
        7.0,
    );
    near(
        &mut misses,
        "age missing",
        rate(&|r| Some(r.age.is_none())),
        6.0,
    );
    near(
        &mut misses,
        "licence missing",
        rate(&|r| Some(r.licence.is_none())),
        8.0,
    );
    near(
        &mut misses,
        "region missing",
        rate(&|r| Some(r.region.is_none())),
        9.0,
    );
    near(
        &mut misses,
        "switch missing",
        rate(&|r| Some(r.switch.is_none())),
        48.0,
    );
    near(
        &mut misses,
        "vehicle age missing",
        rate(&|r| Some(r.vehicle_age.is_none())),
        16.0,
    );
    near(
        &mut misses,
        "accident missing",
        rate(&|r| Some(r.past_accident.is_none())),
        40.0,
    );

    assert!(misses.is_empty(), "{}", misses.join("\n"));

    let mut ages: Vec<u32> = rows.iter().filter_map(|r| r.age).collect();
    ages.sort_unstable();
    let median_age = ages[ages.len() / 2];
    assert!((34..=38).contains(&median_age), "median age {median_age}");
    assert!(*ages.first().unwrap() >= 20 && *ages.last().unwrap() <= 85);
    let buyer_ages: Vec<u32> = rows
        .iter()
        .filter(|r| r.bought)
        .filter_map(|r| r.age)
        .collect();
    let core = buyer_ages.iter().filter(|a| (30..=50).contains(*a)).count() as f64
        / buyer_ages.len() as f64;
    assert!(core > 0.5, "buyers aged 30–50: {core}");

    let mut premiums: Vec<f64> = rows.iter().map(|r| r.premium).collect();
    premiums.sort_unstable_by(f64::total_cmp);
    let median = premiums[premiums.len() / 2];
    assert!(
        (1480.0..=1680.0).contains(&median),
        "median premium {median}"
    );
    assert!(*premiums.last().unwrap() > 20_000.0 && *premiums.last().unwrap() <= 27_000.0);
    let days: Vec<u32> = rows.iter().map(|r| r.days).collect();
    assert!(days.iter().all(|d| (10..=299).contains(d)));
}

#[test]
fn written_rows_look_like_the_real_file() {
    let mut train = Vec::new();
    let mut test = Vec::new();
    let (n_train, n_test) =
        predict_buy_data::synth::write_split(3, 2_000, 0.2, &mut train, &mut test).unwrap();
    assert_eq!(n_train + n_test, 2_000);
    assert!((300..500).contains(&n_test), "{n_test}");
    let t = Table::from_reader(train.as_slice(), "train.csv").unwrap();
    assert_eq!(t.n_rows(), n_train);
    let premium = t.column_index("AnnualPremium").unwrap();
    assert!(
        t.column(premium)
            .any(|c| c.starts_with('£') && c.contains(',') && c.ends_with(' '))
    );
    assert!(t.column(premium).all(|c| parse_currency(c).is_some()));
    let age = t.column_index("Age").unwrap();
    assert!(t.column(age).all(|c| c.is_empty() || c.ends_with(".0")));
    // The same seed writes the same bytes.
    let mut again = Vec::new();
    predict_buy_data::synth::write_split(3, 2_000, 0.2, &mut again, &mut Vec::new()).unwrap();
    assert_eq!(train, again);
}
