//! Binning a training matrix (`Binned::new`): each feature's bin bounds from a sorted
//! sample of its values, then every value's bin. It runs once a fit, inside the fit's
//! time, so for a forest of 100 depth-6 trees it was a tenth of that time.
//!
//! The matrix has the seed data's kinds of encoded columns, 294k rows (a forest
//! bench's training set): ages and regions (tens of values), a premium (tens of
//! thousands of values), flags and small codes, and one-hot groups.
//!
//! Run: `cargo bench -p predict-buy-model --bench binning`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use predict_buy_model::core::{Binned, Matrix};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROWS: usize = 294_000;

fn matrix() -> Matrix {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut col = |f: &mut dyn FnMut(&mut ChaCha8Rng) -> f32| -> Vec<f32> {
        (0..ROWS).map(|_| f(&mut rng)).collect()
    };
    let scale = |v: f32, lo: f32, hi: f32| (v - lo) / (hi - lo);
    let mut columns = vec![
        col(&mut |r| scale(r.random_range(20..86) as f32, 20.0, 85.0)),
        col(&mut |r| scale(r.random_range(0..53) as f32, 0.0, 52.0)),
        col(&mut |r| {
            let pence = (r.random::<f32>().powi(3) * 60_000.0 + 500.0).round();
            scale(pence, 500.0, 60_500.0)
        }),
        col(&mut |r| f32::from(r.random_bool(0.998))),
        col(&mut |r| r.random_range(-1..=1) as f32),
    ];
    for width in [2, 3] {
        let codes: Vec<usize> = (0..ROWS).map(|_| rng.random_range(0..width)).collect();
        for k in 0..width {
            columns.push(codes.iter().map(|&c| f32::from(u8::from(c == k))).collect());
        }
    }
    Matrix {
        n_rows: ROWS,
        columns,
    }
}

fn bench(c: &mut Criterion) {
    let m = matrix();
    let mut g = c.benchmark_group("binning");
    g.throughput(Throughput::Elements((ROWS * m.columns.len()) as u64));
    g.bench_function("binned_new_294k_rows", |b| {
        b.iter(|| black_box(Binned::new(black_box(&m), 255)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
