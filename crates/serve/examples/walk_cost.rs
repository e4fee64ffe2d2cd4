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
use predict_buy_model::{Ensemble, Model};

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
    walk_alone(model.ensemble(), n, &mut next);
}

/// The walk alone (`Ensemble::predict_raw` on encoded rows), on feature rows made
/// from the trees' own thresholds: one row repeated (hot: its paths stay in L1/L2),
/// varied rows (paths from L2/L3 or memory), and one row repeated with 128 KB of
/// other data read between walks, as a request's kernel and HTTP work evicts the
/// nodes from L1 between requests (that read's own cost, timed alone, is subtracted).
fn walk_alone(e: &Ensemble, n: usize, next: &mut impl FnMut() -> u64) {
    if e.trees.is_empty() {
        return;
    }
    let nf = e
        .trees
        .iter()
        .flat_map(|t| t.nodes())
        .filter(|n| !n.is_leaf())
        .map(|n| n.feature as usize + 1)
        .max()
        .unwrap_or(1);
    // Per feature, the thresholds it is split at, so rows land on both sides.
    let mut cuts = vec![Vec::new(); nf];
    for n in e.trees[0].nodes().filter(|n| !n.is_leaf()) {
        cuts[n.feature as usize].push(n.threshold);
    }
    let rows: Vec<Vec<f32>> = (0..4_096)
        .map(|_| {
            cuts.iter()
                .map(|c| {
                    let r = next();
                    if c.is_empty() {
                        (r & 1) as f32
                    } else {
                        c[(r >> 8) as usize % c.len()] + if r & 1 == 0 { -1e-3 } else { 1e-3 }
                    }
                })
                .collect()
        })
        .collect();
    let mut other = vec![0u64; (128 << 10) / 8];
    let mut evict = move || {
        let mut s = 0u64;
        for line in other.chunks_exact_mut(8) {
            line[0] = line[0].wrapping_add(1);
            s = s.wrapping_add(line[0]);
        }
        s
    };
    let m = (n / 4).max(1);
    let best = |f: &mut dyn FnMut(usize) -> f64| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                let mut c = 0.0;
                for i in 0..m {
                    c += f(i);
                }
                std::hint::black_box(c);
                start.elapsed().as_secs_f64() * 1e9 / m as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let evict_alone = best(&mut |_| evict() as f64);
    let hot = best(&mut |_| e.predict_raw(&rows[0]));
    let varied = best(&mut |i| e.predict_raw(&rows[i % rows.len()]));
    let evicted = best(&mut |_| evict() as f64 + e.predict_raw(&rows[0])) - evict_alone;
    println!(
        "walk alone: one row hot {hot:.0} ns; varied rows {varied:.0} ns; one row after 128 KB of other reads {evicted:.0} ns (the reads alone {evict_alone:.0} ns, subtracted)"
    );
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
