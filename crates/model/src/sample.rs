//! Which rows a forest's tree learns from: a bootstrap sample (drawn with replacement,
//! as scikit-learn's forests draw) or a subsample without replacement.
//!
//! The bootstrap is a fifth of a depth-6 forest's time when drawn one row at a time:
//! `draws` random increments of a count array. Here each row's count is drawn
//! directly, as a Poisson variate, in one sequential pass that vectorizes; the few
//! hundred draws by which the Poisson total misses `draws` are then added or taken
//! away at random. The result has exactly the distribution of `draws` uniform draws
//! with replacement (see [`bootstrap`]).

use rand::RngCore;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

/// A uniform random subset of `0..n` of size `k`, sorted.
pub fn subsample(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = sample(rng, n, k.min(n))
        .into_iter()
        .map(|i| i as u32)
        .collect();
    idx.sort_unstable();
    idx
}

/// Draws a bootstrap sample of `draws` rows out of `counts.len()`: `counts` gets how
/// often each row was drawn (saturating at 255; weights are capped lower anyway).
/// `draws` must not exceed the rows.
///
/// Why the result is exactly a bootstrap: with independent Poisson(λ) counts, given
/// their total `s`, the counts are `s` uniform draws with replacement. Adding
/// `draws - s` more uniform draws, or removing `s - draws` of the drawn ones picked
/// uniformly, leaves `draws` uniform draws. The only approximation is the 32-bit
/// uniform behind each count: every `P(count ≥ k)` is rounded to a multiple of 2^-32.
pub fn bootstrap(rng: &mut impl RngCore, draws: usize, counts: &mut [u8]) {
    let n = counts.len();
    if n == 0 {
        return;
    }
    assert!(draws <= n, "a bootstrap of {draws} draws from {n} rows");
    let survival = poisson_survival(draws as f64 / n as f64);
    let mut lanes = Lanes::seed(rng);
    crate::simd::poisson_counts(&mut lanes, &survival, counts);

    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
    for _ in total..draws {
        let c = &mut counts[uniform(rng, n)];
        *c = c.saturating_add(1);
    }
    // Removing a uniformly chosen draw: a row chosen uniformly is taken with
    // probability count / bound, so rows are taken in proportion to their counts.
    // Nothing was added on this path, so the Poisson counts' cap is a bound.
    let bound = POISSON_MAX as u64;
    let mut excess = total.saturating_sub(draws);
    while excess > 0 {
        let i = uniform(rng, n);
        if (rng.next_u64() % bound) < u64::from(counts[i]) {
            counts[i] -= 1;
            excess -= 1;
        }
    }
}

/// Sets `rows` to the rows drawn at least once, in order.
pub fn drawn(counts: &[u8], rows: &mut Vec<u32>) {
    rows.resize(counts.len(), 0);
    let kept = crate::simd::drawn_rows(counts, rows);
    rows.truncate(kept);
}

/// A uniform index below `n`, by Lemire's multiply-shift without the rejection step:
/// its bias is below n / 2^64, far under anything a bootstrap could show.
fn uniform(rng: &mut impl RngCore, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// How many thresholds a count is compared with: a Poisson(λ ≤ 1) count reaches 17
/// with probability below 2^-32 · 10^-4.
pub const POISSON_MAX: usize = 16;

/// `survival[k - 1]` is `P(X ≥ k)` for `X ~ Poisson(λ)`, as a fraction of 2^32, for
/// `k = 1..=16`: a count is the number of thresholds a uniform `u32` falls below.
fn poisson_survival(lambda: f64) -> [u32; POISSON_MAX] {
    let mut pmf = [0.0f64; 48];
    pmf[0] = (-lambda).exp();
    for k in 1..pmf.len() {
        pmf[k] = pmf[k - 1] * lambda / k as f64;
    }
    let mut survival = [0u32; POISSON_MAX];
    for (k, s) in survival.iter_mut().enumerate() {
        // Summed from the small end: the tail is exact where it matters most.
        let tail: f64 = pmf[k + 1..].iter().rev().sum();
        *s = (tail * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32;
    }
    survival
}

/// Rows per step of [`Lanes`]: eight generators, two 32-bit uniforms from each.
pub const LANES: usize = 8;

/// Eight xoshiro256++ generators stepped together. Written lane by lane over arrays so
/// that the compiler keeps them in vector registers: one step is sixteen rows' uniforms,
/// where one generator would be a serial chain of dependent steps.
pub struct Lanes {
    /// Word `w` of every lane's state: `s[w][lane]`.
    pub(crate) s: [[u64; LANES]; 4],
}

impl Lanes {
    pub(crate) fn seed(rng: &mut impl RngCore) -> Self {
        let mut s = [[0u64; LANES]; 4];
        for word in s.iter_mut().flatten() {
            *word = rng.next_u64();
        }
        for lane in 0..LANES {
            // The one state xoshiro must avoid (odds 2^-256, but cheap to rule out).
            if s.iter().all(|w| w[lane] == 0) {
                s[0][lane] = 1;
            }
        }
        Lanes { s }
    }

    #[inline(always)]
    fn next(&mut self) -> [u64; LANES] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut out = [0u64; LANES];
        for l in 0..LANES {
            out[l] = s0[l]
                .wrapping_add(s3[l])
                .rotate_left(23)
                .wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
        out
    }
}

/// Sets each of `counts` to a Poisson variate with the given survival thresholds.
/// Integer arithmetic only, so every vector width gives the same counts.
#[inline(always)]
pub fn poisson_counts_any(lanes: &mut Lanes, survival: &[u32; POISSON_MAX], counts: &mut [u8]) {
    let mut chunks = counts.chunks_exact_mut(2 * LANES);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&poisson_step(lanes, survival));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let len = rest.len();
        rest.copy_from_slice(&poisson_step(lanes, survival)[..len]);
    }
}

/// Sixteen rows' counts from one step of the generators. Thresholds outside, rows
/// inside, so the sixteen rows are compared at once. (A function, not a closure: a
/// closure is compiled apart from the AVX-512 caller and is not inlined into it.)
#[inline(always)]
fn poisson_step(lanes: &mut Lanes, survival: &[u32; POISSON_MAX]) -> [u8; 2 * LANES] {
    let r = lanes.next();
    // Each 64-bit output is two rows' uniforms, low half first (the order a vector
    // register of u32 lanes sees them in).
    let mut u = [0u32; 2 * LANES];
    for (j, u) in u.iter_mut().enumerate() {
        *u = (r[j / 2] >> (32 * (j % 2))) as u32;
    }
    let mut c = [0u8; 2 * LANES];
    for &s in survival {
        for (c, &u) in c.iter_mut().zip(&u) {
            *c += u8::from(u < s);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn lanes_are_eight_xoshiro256plusplus_generators() {
        use rand_xoshiro::Xoshiro256PlusPlus;
        let mut lanes = Lanes::seed(&mut ChaCha8Rng::seed_from_u64(3));
        let mut one: Vec<Xoshiro256PlusPlus> = (0..LANES)
            .map(|l| {
                let mut seed = [0u8; 32];
                for (w, bytes) in seed.chunks_exact_mut(8).enumerate() {
                    bytes.copy_from_slice(&lanes.s[w][l].to_le_bytes());
                }
                Xoshiro256PlusPlus::from_seed(seed)
            })
            .collect();
        for _ in 0..100 {
            let step = lanes.next();
            for (l, g) in one.iter_mut().enumerate() {
                assert_eq!(step[l], g.next_u64());
            }
        }
    }

    #[test]
    fn poisson_thresholds_are_the_survival_function() {
        let s = poisson_survival(1.0);
        let two32 = 4_294_967_296.0;
        let e = (-1.0f64).exp();
        assert_eq!(f64::from(s[0]), (two32 * (1.0 - e)).round());
        assert_eq!(f64::from(s[1]), (two32 * (1.0 - 2.0 * e)).round());
        assert_eq!(f64::from(s[2]), (two32 * (1.0 - 2.5 * e)).round());
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        assert_eq!(s[POISSON_MAX - 1], 0, "P(X ≥ 16) is below 2^-33");
        // Fewer draws than rows: fewer repeats.
        let half = poisson_survival(0.5);
        assert_eq!(
            f64::from(half[0]),
            (two32 * (1.0 - (-0.5f64).exp())).round()
        );
    }

    /// The AVX-512 kernel's counts are the portable loop's, and the counts the
    /// bootstrap uses have Poisson(1)'s frequencies.
    #[test]
    fn poisson_counts_have_poisson_frequencies_on_every_cpu() {
        let survival = poisson_survival(1.0);
        // Not a multiple of the sixteen-row steps: the kernel hands the tail over to the
        // portable loop, which must carry on the same streams.
        let n = 1_000_003;
        let mut portable = vec![0u8; n];
        poisson_counts_any(
            &mut Lanes::seed(&mut ChaCha8Rng::seed_from_u64(9)),
            &survival,
            &mut portable,
        );
        let test = "poisson_counts_have_poisson_frequencies_on_every_cpu";
        let features = ["avx512f", "avx512bw", "avx512vl"];
        if crate::simd::testing::avx512_or_skip(test, &features) {
            #[cfg(target_arch = "x86_64")]
            {
                let mut vector = vec![0u8; n];
                crate::simd::testing::poisson_counts_avx512(
                    &mut Lanes::seed(&mut ChaCha8Rng::seed_from_u64(9)),
                    &survival,
                    &mut vector,
                );
                let first_diff = vector.iter().zip(&portable).position(|(a, b)| a != b);
                assert_eq!(
                    first_diff, None,
                    "first row where the AVX-512 counts differ"
                );
            }
        }
        let mut counts = vec![0u8; n];
        crate::simd::poisson_counts(
            &mut Lanes::seed(&mut ChaCha8Rng::seed_from_u64(9)),
            &survival,
            &mut counts,
        );
        assert!(counts == portable);
        let mut freq = [0usize; 8];
        for &c in &counts {
            freq[usize::from(c).min(7)] += 1;
        }
        let e = (-1.0f64).exp();
        let expected = [e, e, e / 2.0, e / 6.0, e / 24.0];
        for (k, p) in expected.iter().enumerate() {
            let mean = p * n as f64;
            let sd = (mean * (1.0 - p)).sqrt();
            assert!(
                (freq[k] as f64 - mean).abs() < 5.0 * sd,
                "count {k}: {} rows, expected {mean:.0} ± {sd:.0}",
                freq[k]
            );
        }
    }

    #[test]
    fn bootstrap_keeps_every_draw_and_lists_the_drawn_rows() {
        let mut counts = vec![0u8; 10_007];
        let mut rows = Vec::new();
        for (seed, draws) in [(4, 10_007), (5, 10_007), (6, 3_000), (7, 1)] {
            bootstrap(&mut ChaCha8Rng::seed_from_u64(seed), draws, &mut counts);
            drawn(&counts, &mut rows);
            assert_eq!(counts.iter().map(|&c| usize::from(c)).sum::<usize>(), draws);
            let expected: Vec<u32> = (0..10_007).filter(|&r| counts[r as usize] > 0).collect();
            assert_eq!(rows, expected);
        }
        bootstrap(&mut ChaCha8Rng::seed_from_u64(4), 10_007, &mut counts);
        drawn(&counts, &mut rows);
        // About 1 - 1/e of the rows are drawn at least once.
        assert!((6_000..6_700).contains(&rows.len()), "{}", rows.len());
    }

    /// One row's count over many bootstraps of 4 draws from 4 rows is Binomial(4, 1/4),
    /// whatever the Poisson total was before it was corrected.
    #[test]
    fn a_rows_count_is_binomial() {
        let mut counts = vec![0u8; 4];
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let trials = 40_000;
        let mut freq = [0usize; 5];
        for _ in 0..trials {
            bootstrap(&mut rng, 4, &mut counts);
            freq[usize::from(counts[1])] += 1;
        }
        // C(4, k) 3^(4-k) / 4^4
        let expected = [81.0, 108.0, 54.0, 12.0, 1.0].map(|w| w / 256.0);
        for (k, p) in expected.iter().enumerate() {
            let mean = p * trials as f64;
            let sd = (mean * (1.0 - p)).sqrt();
            assert!(
                (freq[k] as f64 - mean).abs() < 5.0 * sd + 1.0,
                "count {k}: {} of {trials}, expected {mean:.0} ± {sd:.0}",
                freq[k]
            );
        }
    }
}
