//! CPU time of `/predict`'s model work alone — cleaning, encoding and the one-row walk
//! of every tree (`Model::predict_values`) — for the benchmark's sample request and
//! for a spread of varied requests. The sample request, repeated, finds its ten tree
//! paths in cache as a load test does; the varied ones walk cold paths as real
//! traffic does. Compare builds with each other, not with the server's per-request
//! figures.
//!
//! `cargo run --release -p predict-buy-serve --example walk_cost -- MODEL.pbm [ROWS]`

use std::borrow::Cow;
use std::time::Instant;

use predict_buy_data::RawValue;
use predict_buy_model::Model;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: walk_cost MODEL.pbm [ROWS]");
    let n: usize = args.next().map_or(200_000, |s| s.parse().expect("a count"));
    let bytes = std::fs::read(&path).expect("the model file reads");
    let model = Model::from_bytes(&bytes).expect("the model loads");
    let sample = [
        RawValue::Text(Cow::Borrowed("Female")),
        RawValue::Number(46.0),
        RawValue::Number(1.0),
        RawValue::Number(21.0),
        RawValue::Number(0.0),
        RawValue::Text(Cow::Borrowed("Yes")),
        RawValue::Number(2305.4),
    ];
    let p = model.predict_values(&sample).expect("the sample predicts");
    println!(
        "sample: class {} probability {:?}",
        p.predicted_class, p.probability
    );

    // A fixed pseudo-random spread over the fields' usual ranges (xorshift, seed 7).
    let mut state = 7u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let varied: Vec<[RawValue<'static>; 7]> = (0..4_096)
        .map(|_| {
            let r = next();
            [
                RawValue::Text(Cow::Borrowed(if r & 1 == 0 { "Male" } else { "Female" })),
                RawValue::Number(20.0 + (r >> 8 & 63) as f64),
                RawValue::Number(1.0),
                RawValue::Number((r >> 16 & 63).min(52) as f64),
                RawValue::Number((r >> 24 & 1) as f64),
                RawValue::Text(Cow::Borrowed(if r >> 25 & 1 == 0 { "Yes" } else { "No" })),
                RawValue::Number(131.5 + (r >> 32 & 0xffff) as f64 / 4.0),
            ]
        })
        .collect();

    time(&model, n, "sample request, repeated", |_| &sample[..]);
    time(&model, n, "varied requests", |i| {
        &varied[i % varied.len()][..]
    });
}

fn time<'r>(model: &Model, n: usize, label: &str, rows: impl Fn(usize) -> &'r [RawValue<'static>]) {
    let mut checksum = 0.0;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for i in 0..n {
            checksum += model.predict_values(rows(i)).map_or(0.0, |p| p.probability);
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / n as f64);
    }
    println!("{label}: {best:.0} ns per record (best of 5 x {n}; checksum {checksum:.6})");
}
