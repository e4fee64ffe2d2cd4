//! The three learners of the config — `DecisionTreeClassifier`,
//! `RandomForestClassifier`, `GradientBoostingClassifier` — with scikit-learn's
//! parameter names and defaults, all on the one histogram grower.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::binning::Binned;
use crate::ensemble::{Ensemble, Link, Precision};
use crate::grow::{Criterion, Drawn, GrowParams, Grower, route_binned};
use crate::sample::{bootstrap, subsample};
use crate::tree::Tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitCriterion {
    Gini,
    Entropy,
    #[serde(alias = "log_loss")]
    LogLoss,
}

/// scikit-learn's `max_features`: a name, a count or a fraction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxFeatures {
    Count(usize),
    Fraction(f64),
    Name(MaxFeaturesName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxFeaturesName {
    Sqrt,
    Log2,
}

impl MaxFeatures {
    fn resolve(&self, n: usize) -> usize {
        let k = match self {
            MaxFeatures::Count(k) => *k,
            MaxFeatures::Fraction(f) => (f * n as f64).floor() as usize,
            MaxFeatures::Name(MaxFeaturesName::Sqrt) => (n as f64).sqrt().floor() as usize,
            MaxFeatures::Name(MaxFeaturesName::Log2) => (n as f64).log2().floor() as usize,
        };
        k.clamp(1, n.max(1))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionTreeParams {
    pub criterion: SplitCriterion,
    pub splitter: Splitter,
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    pub max_features: Option<MaxFeatures>,
    pub max_leaf_nodes: Option<usize>,
    pub min_impurity_decrease: f64,
    pub random_state: Option<u64>,
    pub max_bins: usize,
}

/// Only scikit-learn's default, `best`, is supported; `random` is refused by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Splitter {
    #[default]
    Best,
}

impl Default for DecisionTreeParams {
    fn default() -> Self {
        Self {
            criterion: SplitCriterion::Gini,
            splitter: Splitter::Best,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: None,
            max_leaf_nodes: None,
            min_impurity_decrease: 0.0,
            random_state: None,
            max_bins: 255,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandomForestParams {
    pub n_estimators: usize,
    pub criterion: SplitCriterion,
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    pub max_features: Option<MaxFeatures>,
    pub max_leaf_nodes: Option<usize>,
    pub min_impurity_decrease: f64,
    pub bootstrap: bool,
    /// Rows drawn per tree: a count or a fraction; all rows when absent.
    pub max_samples: Option<MaxFeatures>,
    pub random_state: Option<u64>,
    /// Accepted for compatibility; training always uses every core.
    pub n_jobs: Option<i64>,
    pub max_bins: usize,
}

impl Default for RandomForestParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            criterion: SplitCriterion::Gini,
            max_depth: None,
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_features: Some(MaxFeatures::Name(MaxFeaturesName::Sqrt)),
            max_leaf_nodes: None,
            min_impurity_decrease: 0.0,
            bootstrap: true,
            max_samples: None,
            random_state: None,
            n_jobs: None,
            max_bins: 255,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientBoostingParams {
    pub n_estimators: usize,
    pub learning_rate: f64,
    /// `null` grows trees until the leaf limits stop them.
    pub max_depth: Option<usize>,
    pub min_samples_split: usize,
    pub min_samples_leaf: usize,
    pub max_leaf_nodes: Option<usize>,
    pub max_features: Option<MaxFeatures>,
    pub subsample: f64,
    /// L2 penalty on leaf values (scikit-learn's HistGradientBoosting name).
    pub l2_regularization: f64,
    /// Smallest hessian sum of a leaf.
    pub min_child_weight: f64,
    pub min_impurity_decrease: f64,
    /// Stop when the validation loss has not improved for this many rounds.
    pub n_iter_no_change: Option<usize>,
    pub tol: f64,
    pub random_state: Option<u64>,
    pub max_bins: usize,
}

impl Default for GradientBoostingParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            learning_rate: 0.1,
            max_depth: Some(3),
            min_samples_split: 2,
            min_samples_leaf: 1,
            max_leaf_nodes: None,
            max_features: None,
            subsample: 1.0,
            l2_regularization: 0.0,
            min_child_weight: 1e-3,
            min_impurity_decrease: 0.0,
            n_iter_no_change: None,
            tol: 1e-7,
            random_state: None,
            max_bins: 255,
        }
    }
}

/// What a learner sees: binned features and 0/1 labels.
pub struct FitData<'a> {
    pub binned: &'a Binned,
    pub y: &'a [u8],
}

/// A held-out set for early stopping, already binned with the training bin mappers.
pub struct Validation<'a> {
    pub binned: &'a Binned,
    pub y: &'a [u8],
}

/// Reports progress as `(done, total)` units of work.
pub type Tick<'a> = &'a (dyn Fn(usize, usize) + Sync);

fn criterion(c: SplitCriterion) -> Criterion {
    match c {
        SplitCriterion::Gini => Criterion::Gini,
        SplitCriterion::Entropy | SplitCriterion::LogLoss => Criterion::Entropy,
    }
}

/// scikit-learn's default `random_state=None` means "unseeded"; we still want runs to be
/// reproducible, so no seed means seed 0.
fn rng(seed: Option<u64>, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.unwrap_or(0).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

/// A decision tree is a forest of one tree grown on every row.
pub fn fit_decision_tree(p: &DecisionTreeParams, data: &FitData<'_>) -> Ensemble {
    let one_tree = RandomForestParams {
        n_estimators: 1,
        criterion: p.criterion,
        max_depth: p.max_depth,
        min_samples_split: p.min_samples_split,
        min_samples_leaf: p.min_samples_leaf,
        max_features: p.max_features.clone(),
        max_leaf_nodes: p.max_leaf_nodes,
        min_impurity_decrease: p.min_impurity_decrease,
        bootstrap: false,
        max_samples: None,
        random_state: p.random_state,
        n_jobs: None,
        max_bins: p.max_bins,
    };
    fit_random_forest(&one_tree, data, &|_, _| {})
}

pub fn fit_random_forest(p: &RandomForestParams, data: &FitData<'_>, tick: Tick<'_>) -> Ensemble {
    let n = data.y.len();
    let draws = match &p.max_samples {
        None => n,
        Some(m) => m.resolve(n),
    };
    let gp = GrowParams {
        criterion: criterion(p.criterion),
        max_depth: p.max_depth,
        max_leaf_nodes: p.max_leaf_nodes,
        min_samples_leaf: p.min_samples_leaf,
        min_samples_split: p.min_samples_split,
        min_child_weight: 0.0,
        lambda: 0.0,
        min_gain: p.min_impurity_decrease,
        max_features: p
            .max_features
            .as_ref()
            .map(|m| m.resolve(data.binned.n_features())),
        // Many trees run in parallel; a lone tree parallelises its histograms instead.
        parallel: p.n_estimators == 1,
        leaf_rows: false,
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    // One worker per thread, each with one grower (sharing the first's layout) and one
    // set of buffers for all its trees: per-tree buffers of this size are fresh pages,
    // and the kernel zeroing them was a fifth of a forest's time. Tree `t` always uses
    // random stream `t`, so the forest does not depend on which worker grew which tree.
    let workers = rayon::current_num_threads().clamp(1, p.n_estimators.max(1));
    let first = Grower::new(data.binned, &gp);
    let mut grown: Vec<(usize, Tree)> = (0..workers)
        .into_par_iter()
        .map(|w| {
            let mut grower = first.sibling();
            let mut counts = vec![0u8; if p.bootstrap { n } else { 0 }];
            let mut trees = Vec::new();
            for t in (w..p.n_estimators).step_by(workers) {
                let mut r = rng(p.random_state, 1000 + t as u64);
                // A row drawn k times weighs k; without bootstrap every row weighs 1.
                let tree = if p.bootstrap {
                    bootstrap(&mut r, draws, &mut counts);
                    grower.grow_classes(Drawn::Counts(&counts), data.y, &mut r)
                } else {
                    let rows = subsample(&mut r, n, draws);
                    grower.grow_classes(Drawn::Rows(&rows), data.y, &mut r)
                };
                trees.push((t, tree));
                tick(
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                    p.n_estimators,
                );
            }
            trees
        })
        .flatten()
        .collect();
    grown.sort_by_key(|(t, _)| *t);
    let trees = grown.into_iter().map(|(_, tree)| tree).collect();
    Ensemble {
        link: Link::Average,
        base_score: 0.0,
        trees,
        precision: Precision::F64,
    }
}

pub fn fit_gradient_boosting(
    p: &GradientBoostingParams,
    data: &FitData<'_>,
    validation: Option<&Validation<'_>>,
    tick: Tick<'_>,
) -> (Ensemble, BoostLog) {
    let n = data.y.len();
    let pos = data.y.iter().filter(|&&y| y == 1).count() as f64;
    let prior = (pos / n as f64).clamp(1e-6, 1.0 - 1e-6);
    let base = (prior / (1.0 - prior)).ln();
    let mut scores = vec![base; n];
    let mut val_scores = validation.map(|v| vec![base; v.y.len()]);
    let gp = GrowParams {
        criterion: Criterion::Newton,
        max_depth: p.max_depth,
        max_leaf_nodes: p.max_leaf_nodes,
        min_samples_leaf: p.min_samples_leaf,
        min_samples_split: p.min_samples_split,
        min_child_weight: p.min_child_weight,
        lambda: p.l2_regularization,
        min_gain: p.min_impurity_decrease,
        max_features: p
            .max_features
            .as_ref()
            .map(|m| m.resolve(data.binned.n_features())),
        parallel: true,
        leaf_rows: true,
    };
    let mut r = rng(p.random_state, 2);
    let mut trees = Vec::with_capacity(p.n_estimators);
    let mut log = BoostLog::default();
    let lr = p.learning_rate as f32;
    let mut grower = Grower::new(data.binned, &gp);
    let mut rows: Vec<u32> = Vec::with_capacity(n);
    for round in 0..p.n_estimators {
        grower.set_logistic_gradients(&scores, data.y);
        let sampled = p.subsample < 1.0;
        rows.clear();
        if sampled {
            rows.extend(subsample(
                &mut r,
                n,
                ((n as f64) * p.subsample).round().max(1.0) as usize,
            ));
        } else {
            // In order: rows are visited in index order, which keeps reads sequential.
            rows.extend(0..n as u32);
        }
        let mut grown = grower.grow(std::mem::take(&mut rows), &mut r);
        rows = std::mem::take(&mut grown.rows);
        grown.tree.scale_leaves(lr);
        if sampled {
            let (tree, bins) = (&grown.tree, &grown.split_bins);
            scores
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, s)| *s += f64::from(route_binned(tree, bins, data.binned, i)));
        } else {
            for (range, value) in &grown.leaves {
                let v = f64::from(*value) * f64::from(lr);
                for &i in &rows[range.clone()] {
                    scores[i as usize] += v;
                }
            }
        }
        if let (Some(v), Some(vs)) = (validation, val_scores.as_mut()) {
            let (tree, bins) = (&grown.tree, &grown.split_bins);
            vs.par_iter_mut()
                .enumerate()
                .for_each(|(i, s)| *s += f64::from(route_binned(tree, bins, v.binned, i)));
            let loss = log_loss_of_scores(vs, v.y);
            log.validation_loss.push(loss);
            trees.push(grown.tree);
            tick(round + 1, p.n_estimators);
            if let Some(patience) = p.n_iter_no_change {
                let best = log.best_round();
                if round >= best + patience {
                    log.stopped_early = true;
                    trees.truncate(best + 1);
                    break;
                }
            }
        } else {
            trees.push(grown.tree);
            tick(round + 1, p.n_estimators);
        }
    }
    (
        Ensemble {
            link: Link::Logit,
            base_score: base,
            trees,
            precision: Precision::F64,
        },
        log,
    )
}

/// What boosting observed on its validation set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BoostLog {
    pub validation_loss: Vec<f64>,
    pub stopped_early: bool,
}

impl BoostLog {
    fn best_round(&self) -> usize {
        self.validation_loss
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Rows per partial sum of [`log_loss_of_scores`].
const LOSS_CHUNK: usize = 4096;

fn log_loss_of_scores(scores: &[f64], y: &[u8]) -> f64 {
    // Fixed chunks summed in order, not rayon's `sum`: its split points follow work
    // stealing, so the float total (and early stopping, which reads it) would depend on
    // how busy the machine was.
    let partial: Vec<f64> = scores
        .par_chunks(LOSS_CHUNK)
        .zip(y.par_chunks(LOSS_CHUNK))
        .map(|(scores, y)| {
            scores
                .iter()
                .zip(y)
                .map(|(&s, &y)| {
                    // log(1 + e^s) − y·s, computed stably.
                    let softplus = if s > 0.0 {
                        s + (-s).exp().ln_1p()
                    } else {
                        s.exp().ln_1p()
                    };
                    softplus - f64::from(y) * s
                })
                .sum::<f64>()
        })
        .collect();
    partial.iter().sum::<f64>() / y.len().max(1) as f64
}
