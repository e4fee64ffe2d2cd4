//! Inference speed of a 100-tree, depth-6 boosted ensemble: one row at a time (the
//! service's path) and in batches on one core (`predict` / `evaluate`). Then the seed
//! config's kind of model, ten unlimited-depth boosted trees, on test rows: one row at
//! a time, a batch on one core (several rows walk each tree at once), and a batch on
//! every core (what training's evaluation runs).
//!
//! Run: `cargo bench -p predict-buy-model --bench inference`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use predict_buy_data::{RawValue, Table};
use predict_buy_model::{Model, TrainConfig, TrainRequest};

fn model_and_rows() -> (Model, Table) {
    trained(60_000, |params| {
        params["n_estimators"] = 100.into();
        params["max_depth"] = 6.into();
        params["min_samples_leaf"] = 1.into();
    })
}

fn trained(rows: usize, set: impl FnOnce(&mut serde_json::Value)) -> (Model, Table) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    predict_buy_data::synth::write_split(1, rows, 0.5, &mut train, &mut test).unwrap();
    let mut cfg: TrainConfig =
        serde_yaml_ng::from_str(predict_buy_model::DEFAULT_CONFIG_YAML).unwrap();
    set(cfg.model.params.as_mut().unwrap());
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

    // One cleaned, encoded row → probability.
    let rows: Vec<Vec<f32>> = (0..1024)
        .map(|i| {
            let mut x = vec![0f32; model.n_features()];
            for (f, v) in x.iter_mut().enumerate() {
                *v = ((i * 31 + f * 7) % 50) as f32;
            }
            x
        })
        .collect();
    let mut i = 0;
    c.bench_function("one encoded row (100 trees, depth 6)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(model.ensemble().predict_raw(black_box(&rows[i])))
        })
    });

    // One raw record → cleaned, encoded, predicted (the service's work per request).
    let record = [
        RawValue::text("Female"),
        RawValue::Number(46.0),
        RawValue::Number(1.0),
        RawValue::Number(21.0),
        RawValue::Number(0.0),
        RawValue::text("Yes"),
        RawValue::text("£2,305.40"),
    ];
    c.bench_function("one raw record, cleaned and predicted", |b| {
        b.iter(|| black_box(model.predict_values(black_box(&record)).unwrap()))
    });

    // Batch scoring on one core, features already encoded.
    let n = 100_000;
    let columns: Vec<Vec<f32>> = (0..model.n_features())
        .map(|f| (0..n).map(|r| ((r * 31 + f * 7) % 50) as f32).collect())
        .collect();
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    group.bench_function("100k encoded rows, one core", |b| {
        b.iter_batched_ref(
            Vec::new,
            |out| model.predict_encoded(black_box(&columns), n, out),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(test.n_rows() as u64));
    group.sample_size(10);
    group.bench_function("raw CSV rows: clean + encode + predict", |b| {
        b.iter(|| black_box(model.predict_table(black_box(&test)).unwrap()))
    });
    group.finish();
    deep(c);
}

fn deep(c: &mut Criterion) {
    // The seed config's parameters: everything else at its default, as the seed has.
    let (model, test) = trained(200_000, |params| {
        *params = serde_json::json!({"n_estimators": 10, "max_depth": null});
    });
    let e = model.ensemble();
    eprintln!(
        "deep model: {} trees, max depth {}, {} nodes in total",
        e.trees.len(),
        e.trees.iter().map(|t| t.depth()).max().unwrap_or(0),
        e.trees.iter().map(|t| t.len()).sum::<usize>()
    );
    let payload = model.payload();
    let frame = payload.cleaner.clean_evaluation(&test).unwrap();
    let m = payload.encoder.transform(&frame.features);
    let n = m.n_rows;
    let rows: Vec<Vec<f32>> = (0..n)
        .map(|r| m.columns.iter().map(|c| c[r]).collect())
        .collect();
    let mut group = c.benchmark_group("deep");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function("10 full-depth trees, test rows one at a time", |b| {
        b.iter(|| {
            rows.iter()
                .map(|x| e.predict_raw(black_box(x)))
                .sum::<f64>()
        })
    });
    // The batch path before rows walked together: tree by tree, one walk at a time.
    group.bench_function(
        "10 full-depth trees, tree by tree, one walk at a time",
        |b| {
            b.iter(|| {
                let mut sums = vec![0f64; n];
                for t in &e.trees {
                    for (s, x) in sums.iter_mut().zip(&rows) {
                        *s += f64::from(t.predict(black_box(x)));
                    }
                }
                black_box(sums)
            })
        },
    );
    group.bench_function("10 full-depth trees, test rows in a batch, one core", |b| {
        b.iter_batched_ref(
            Vec::new,
            |out| e.predict_raw_batch(black_box(&m.columns), n, out),
            BatchSize::LargeInput,
        )
    });
    group.bench_function(
        "10 full-depth trees, test rows in a batch, every core",
        |b| b.iter(|| black_box(e.predict_raw_par(black_box(&m.columns), n))),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
