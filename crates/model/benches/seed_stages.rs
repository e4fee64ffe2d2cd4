//! Where the seed config's training goes, stage by stage: reading and parsing the
//! CSV files, cleaning, encoding, SMOTE, fitting, evaluating, and building the
//! artifact; the CLI's `train` does the same and then writes the artifact.
//!
//! Run: `PREDICT_BUY_SEED_DIR=DIR cargo bench -p predict-buy-model --bench seed_stages`
//! with `DIR/train.csv`, `DIR/test.csv` (e.g. from `predict-buy data synth --rows
//! 508146 --test-fraction 0.25`) and `DIR/config.yml` (the seed's config). Optional:
//! `PREDICT_BUY_SEED_RUNS` (default 5), and `PREDICT_BUY_SIMD=avx2` for the kernels a
//! CPU without AVX-512 runs. Prints each stage's median wall and CPU time.

use std::sync::Mutex;
use std::time::Instant;

use predict_buy_data::Table;
use predict_buy_model::{Progress, TrainConfig, TrainRequest};

/// When a stage starts: wall clock and the process's CPU seconds.
type Mark = (String, Instant, f64);

/// Records when each stage starts.
struct Stages(Mutex<Vec<Mark>>);

impl Progress for Stages {
    fn stage(&self, name: &str) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        s.push(mark(name));
    }
}

fn mark(name: &str) -> Mark {
    (name.to_string(), Instant::now(), cpu_seconds())
}

/// User plus system CPU time of this process, from `/proc/self/stat` (Linux, in the
/// usual 100 ticks a second); 0 elsewhere. On a shared machine CPU time says more
/// than wall time about our own work.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let Ok(dir) = std::env::var("PREDICT_BUY_SEED_DIR") else {
        eprintln!(
            "seed_stages: skipped: set PREDICT_BUY_SEED_DIR to a folder with train.csv, test.csv and config.yml"
        );
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let runs: usize = std::env::var("PREDICT_BUY_SEED_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let config: TrainConfig = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir.join("config.yml")).expect("config.yml"),
    )
    .expect("a training config");
    eprintln!(
        "kernels: {} ({} threads)",
        predict_buy_model::core::level().name(),
        rayon::current_num_threads()
    );
    let mut times: Vec<Vec<(String, f64, f64)>> = Vec::new();
    let mut auc = 0.0;
    for _ in 0..runs {
        let start = mark("read CSV");
        let read = |name: &str| {
            let bytes = std::fs::read(dir.join(name)).expect("the CSV file");
            Table::from_bytes(&bytes, name).expect("a CSV table")
        };
        let (train, test) = (read("train.csv"), read("test.csv"));
        let stages = Stages(Mutex::new(vec![start.clone()]));
        let out = predict_buy_model::train(
            &TrainRequest {
                config: &config,
                train: &train,
                test: Some(&test),
                data_digest: None,
                trained_at: String::new(),
                tool_version: String::new(),
                git_commit: None,
            },
            &stages,
        )
        .expect("training");
        let mut marks = stages.0.into_inner().unwrap_or_else(|e| e.into_inner());
        marks.push(mark("artifact bytes"));
        let bytes = out.model.to_bytes();
        marks.push(mark("end"));
        std::hint::black_box(bytes);
        auc = out.report.test.roc_auc.unwrap_or(f64::NAN);
        // The artifact stage is from the last stage mark's end to the serialized bytes.
        let last = &marks[marks.len() - 1];
        let run: Vec<(String, f64, f64)> = marks
            .windows(2)
            .map(|w| {
                (
                    w[0].0.clone(),
                    (w[1].1 - w[0].1).as_secs_f64(),
                    w[1].2 - w[0].2,
                )
            })
            .chain([(
                "total".to_string(),
                (last.1 - start.1).as_secs_f64(),
                last.2 - start.2,
            )])
            .collect();
        times.push(run);
    }
    println!("stage (median of {runs} runs)     wall s   CPU s");
    for (k, (name, _, _)) in times[0].iter().enumerate() {
        let wall = median(times.iter().map(|r| r[k].1).collect());
        let cpu = median(times.iter().map(|r| r[k].2).collect());
        println!("{name:<30}{wall:>9.3}{cpu:>8.2}");
    }
    println!("test ROC AUC {auc:.4}");
}
