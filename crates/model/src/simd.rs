//! Vector kernels for the grower's hottest loops: the row partition (AVX-512, chosen
//! at run time; elsewhere the scalar loop does all the work), the booster's gradients
//! (a vectorizable `exp`, compiled for AVX-512 where there is one) and a cache
//! prefetch. This is the only unsafe code in the workspace: each unsafe call says why
//! it is sound, and tests check each kernel against its scalar twin.
#![allow(unsafe_code)]

/// Partitions a prefix of `rows` exactly as `grow::partition`'s scalar loop would:
/// rows with `col[row] <= bin` are moved, in order, to `rows[..l]`, the others to
/// `scratch[..r]`. Returns `(l, r, done)`: the scalar loop carries on from `rows[done]`.
pub fn partition_prefix(
    rows: &mut [u32],
    scratch: &mut [u32],
    col: &[u8],
    bin: u8,
) -> (usize, usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { avx512::partition_prefix(rows, scratch, col, bin) };
    }
    let _ = (rows, scratch, col, bin);
    (0, 0, 0)
}

/// Sets `g` and `h` to the log-loss gradient and hessian of each row, in the
/// grower's fixed point: `p - y` and `p (1 - p)` with `p = sigmoid(score)`. Computed
/// with [`exp`], which vectorizes; with AVX-512 eight rows a step.
pub fn logistic_gradients(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: the CPU has AVX-512F and DQ, checked just above.
        return unsafe { avx512::logistic_gradients(scores, y, g, h) };
    }
    logistic_gradients_any(scores, y, g, h);
}

/// [`logistic_gradients`] for whatever vector width the caller was compiled for. The
/// arithmetic is IEEE (no fused multiply-adds), so every width gives the same bits.
#[inline(always)]
fn logistic_gradients_any(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
    for (((&s, &y), g), h) in scores.iter().zip(y).zip(g).zip(h) {
        let p = 1.0 / (1.0 + exp(-s));
        *g = crate::grow::quantize(p - f64::from(y));
        *h = crate::grow::quantize((p * (1.0 - p)).max(1e-16));
    }
}

/// `e^x` within 4 ulps of `f64::exp` (saturating outside ±708), with no calls or
/// branches so that loops of it vectorize; glibc's `exp` is a call per value, and it
/// was a third of boosting's time at depth 3.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    // fdlibm's split of ln 2: `k * LN2_HI` is exact for the k used here.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // Adding 1.5 * 2^52 rounds to an integer, which the low bits then hold.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let x = x.clamp(-708.0, 708.0);
    let t = x * std::f64::consts::LOG2_E + ROUND;
    let k = t - ROUND;
    let ki = (t.to_bits() as i64).wrapping_sub(ROUND.to_bits() as i64);
    // x = k ln 2 + r with |r| <= ln 2 / 2, and e^r from its Taylor series to r^12
    // (the next term is below 2e-16).
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for d in [
        39_916_800.0,
        3_628_800.0,
        362_880.0,
        40_320.0,
        5_040.0,
        720.0,
        120.0,
        24.0,
        6.0,
        2.0,
        1.0,
        1.0,
    ] {
        p = p * r + 1.0 / d;
    }
    p * f64::from_bits(((ki + 1023) as u64) << 52)
}

/// Asks the CPU to bring `data[i]` into cache, if `i` is in bounds.
#[inline]
pub fn prefetch<T>(data: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = data.get(i) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of x86_64; a prefetch reads nothing the program sees,
        // and the address is of a live element.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, i);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The portable loop, compiled for AVX-512 (DQ converts f64 to i64 in vectors).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) fn logistic_gradients(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
        super::logistic_gradients_any(scores, y, g, h);
    }

    /// 16 rows a step: gather their bins, compare, and compress each side's rows
    /// into one vector stored whole. The lanes stored past a side's end are
    /// overwritten by its next step or by the caller. (A compressing store to memory
    /// would write just the kept lanes, but it is many times slower on AMD Zen 4.)
    #[target_feature(enable = "avx512f")]
    pub(super) fn partition_prefix(
        rows: &mut [u32],
        scratch: &mut [u32],
        col: &[u8],
        bin: u8,
    ) -> (usize, usize, usize) {
        let n = rows.len().min(scratch.len());
        // A gather reads four bytes at `col + row`; rows below this read inside `col`
        // (and are positive as i32, as the gather's offsets must be).
        let readable = col.len().saturating_sub(3).min(i32::MAX as usize) as i32;
        let readable = _mm512_set1_epi32(readable);
        let limit = _mm512_set1_epi32(i32::from(bin));
        let low_byte = _mm512_set1_epi32(0xFF);
        let (mut l, mut r, mut i) = (0, 0, 0);
        while i + 16 <= n {
            // SAFETY: i + 16 <= rows.len(): the 16 lanes are inside `rows`.
            let v = unsafe { _mm512_loadu_si512(rows.as_ptr().add(i).cast()) };
            if _mm512_cmplt_epu32_mask(v, readable) != 0xFFFF {
                // A row near the end of `col`: the scalar loop takes it from here.
                break;
            }
            // SAFETY: every lane's row is below `col.len() - 3`, so the four bytes it
            // reads are inside `col`.
            let bins = unsafe { _mm512_i32gather_epi32::<1>(v, col.as_ptr().cast()) };
            let left = _mm512_cmple_epu32_mask(_mm512_and_si512(bins, low_byte), limit);
            // SAFETY: every row before `i` went to exactly one side, so l + r == i and
            // l + 16 <= i + 16 <= rows.len(), r + 16 <= scratch.len(). The store to
            // `rows` writes only below i + 16: rows already loaded.
            unsafe {
                _mm512_storeu_si512(
                    rows.as_mut_ptr().add(l).cast(),
                    _mm512_maskz_compress_epi32(left, v),
                );
                _mm512_storeu_si512(
                    scratch.as_mut_ptr().add(r).cast(),
                    _mm512_maskz_compress_epi32(!left, v),
                );
            }
            let k = left.count_ones() as usize;
            l += k;
            r += 16 - k;
            i += 16;
        }
        (l, r, i)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The AVX-512 build of the gradient loop gives the same bits as the portable one
    /// (no fused multiply-adds, no reassociation), so models do not depend on the CPU.
    #[test]
    fn gradients_are_the_same_bits_on_every_cpu() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 4099;
        let scores: Vec<f64> = (0..n).map(|_| rng.random_range(-40.0..40.0)).collect();
        let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..2)).collect();
        let (mut g1, mut h1, mut g2, mut h2) = (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
        super::logistic_gradients(&scores, &y, &mut g1, &mut h1);
        super::logistic_gradients_any(&scores, &y, &mut g2, &mut h2);
        assert_eq!((g1, h1), (g2, h2));
    }
}
