//! Explanation speed: exact TreeSHAP for one row of a 100-tree, depth-6 boosted
//! ensemble (the budget is 50 µs), on its own and with the cleaning and
//! encoding `/explain` adds.
//!
//! Run: `cargo bench -p predict-buy-model --bench explain`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use predict_buy_data::{RawValue, Table};
use predict_buy_model::{Model, TrainConfig, TrainRequest};

fn model_and_rows() -> (Model, Table) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(1, 60_000, 0.5, &mut train, &mut test).unwrap();
    let mut cfg: TrainConfig =
        serde_yaml_ng::from_str(predict_buy_model::DEFAULT_CONFIG_YAML).unwrap();
    let params = cfg.model.params.as_mut().unwrap();
    params["n_estimators"] = 100.into();
    params["max_depth"] = 6.into();
    params["min_samples_leaf"] = 1.into();
    let train = Table::from_reader(train.as_slice(), "train.csv").unwrap();
    let test = Table::from_reader(test.as_slice(), "test.csv").unwrap();
    let out = predict_buy_model::train(
        &TrainRequest {
            config: &cfg,
            train: &train,
            test: Some(&test),
            data_digest: None,
            trained_at: String::new(),
            tool_version: String::new(),
            git_commit: None,
        },
        &predict_buy_model::Quiet,
    )
    .unwrap();
    (out.model, test)
}

fn bench(c: &mut Criterion) {
    let (model, test) = model_and_rows();
    let trees = &model.ensemble().trees;
    eprintln!(
        "model: {} trees, max depth {}, {} leaves in total",
        trees.len(),
        trees.iter().map(|t| t.depth()).max().unwrap_or(0),
        trees.iter().map(|t| t.n_leaves()).sum::<usize>()
    );
    let start = std::time::Instant::now();
    let explainer = model.explainer().unwrap();
    eprintln!("explainer built in {:?}", start.elapsed());

    // Real test rows, cleaned and encoded as the model does it.
    let payload = model.payload();
    let m = payload
        .encoder
        .transform(&payload.cleaner.clean_features(&test).unwrap());
    let rows: Vec<Vec<f32>> = (0..m.n_rows.min(1024))
        .map(|r| {
            let mut x = Vec::new();
            m.row(r, &mut x);
            x
        })
        .collect();
    let mut phi = vec![0f64; model.n_features()];
    let mut i = 0;
    c.bench_function("explain one encoded row (100 trees, depth 6)", |b| {
        b.iter(|| {
            i = (i + 1) % rows.len();
            phi.fill(0.0);
            explainer.explain(black_box(&rows[i]), &mut phi);
            black_box(&phi);
        })
    });

    // The same work timed by this thread's CPU clock: on a loaded machine, wall time
    // also counts the time other processes held the core.
    c.bench_function("explain one encoded row, thread CPU time", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                i = (i + 1) % rows.len();
                phi.fill(0.0);
                explainer.explain(black_box(&rows[i]), &mut phi);
                black_box(&phi);
            }
            thread_cpu_time() - start
        })
    });

    let record = [
        RawValue::text("Female"),
        RawValue::Number(46.0),
        RawValue::Number(1.0),
        RawValue::Number(21.0),
        RawValue::Number(0.0),
        RawValue::text("Yes"),
        RawValue::text("£2,305.40"),
    ];
    c.bench_function("explain one raw record, cleaned and encoded", |b| {
        b.iter(|| black_box(model.explain_values(black_box(&record)).unwrap()))
    });
}

#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

criterion_group!(benches, bench);
criterion_main!(benches);
