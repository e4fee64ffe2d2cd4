//! Vector kernels for the grower's hottest loops: the partitions of row indices and of
//! records, the booster's gradients (a vectorizable `exp`, compiled for the vector
//! width at hand), the bootstrap's Poisson counts, drawn-row list and drawn rows'
//! records, and a cache prefetch. Each kernel has an AVX-512 version, an AVX2 version
//! and the scalar loop, chosen at run time: the widest the CPU has, unless
//! [`SIMD_ENV`] caps it. This is the only unsafe code in the workspace: each unsafe
//! call says why it is sound, and tests check each kernel against its scalar twin.
#![allow(unsafe_code)]

use std::sync::OnceLock;

use crate::sample;

/// The environment variable that caps the kernels a process uses: `avx2` runs the
/// AVX2 kernels even on a CPU with AVX-512, and `scalar` the portable loops, so that
/// one machine can test and benchmark what a machine without AVX-512 runs. It is read
/// once, on first use; unset, empty, `native` or anything else means the widest the
/// CPU has.
pub const SIMD_ENV: &str = "PREDICT_BUY_SIMD";

/// A family of kernels, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
}

impl Level {
    /// The name [`SIMD_ENV`] takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// `avx2` or `scalar` (any case); anything else caps nothing.
    fn cap_from(value: Option<&str>) -> Level {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("scalar") => Level::Scalar,
            Some("avx2") => Level::Avx2,
            _ => Level::Avx512,
        }
    }
}

/// The widest level [`SIMD_ENV`] allows, read once: kernels run in the hottest loops,
/// and a process must not switch kernels half way through a model.
fn cap() -> Level {
    static CAP: OnceLock<Level> = OnceLock::new();
    *CAP.get_or_init(|| Level::cap_from(std::env::var(SIMD_ENV).ok().as_deref()))
}

/// Whether the AVX-512 kernels may run (the CPU's own features are checked apart).
#[inline]
fn avx512_allowed() -> bool {
    cap() >= Level::Avx512
}

/// Whether the AVX2 kernels may run and the CPU has AVX2.
#[inline]
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cap() >= Level::Avx2 && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The level of kernels this process runs: the widest the CPU has (AVX-512 when it has
/// every feature the AVX-512 kernels use), capped by [`SIMD_ENV`]. For reports and
/// benchmarks; each kernel checks its own features.
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if avx512_allowed()
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("avx512vbmi")
        {
            return Level::Avx512;
        }
    }
    if avx2() { Level::Avx2 } else { Level::Scalar }
}

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
    {
        if avx512_allowed() && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::partition_prefix(rows, scratch, col, bin) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::partition_prefix(rows, scratch, col, bin) };
        }
    }
    let _ = (rows, scratch, col, bin);
    (0, 0, 0)
}

/// The vector part of a stable partition of records (`u64`) by one byte each: the
/// byte at `shift` is looked up in `bins`, and the record goes left (to the front of
/// `records`) when that is at most `bin`, else to `scratch`. Returns the records on
/// each side and how many records it took; the caller finishes the rest.
pub fn partition_records_prefix(
    records: &mut [u64],
    scratch: &mut [u64],
    shift: u32,
    bins: &[u8; 256],
    bin: u8,
) -> (usize, usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
        {
            // SAFETY: the CPU has AVX-512F, BW and VBMI, checked just above.
            return unsafe { avx512::partition_records_prefix(records, scratch, shift, bins, bin) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::partition_records_prefix(records, scratch, shift, bins, bin) };
        }
    }
    let _ = (records, scratch, shift, bins, bin);
    (0, 0, 0)
}

/// Sets `g` and `h` to the log-loss gradient and hessian of each row, in the
/// grower's fixed point: `p - y` and `p (1 - p)` with `p = sigmoid(score)`. Computed
/// with [`exp`], which vectorizes; with AVX-512 eight rows a step, with AVX2 four.
pub fn logistic_gradients(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: the CPU has AVX-512F and DQ, checked just above.
            return unsafe { avx512::logistic_gradients(scores, y, g, h) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::logistic_gradients(scores, y, g, h) };
        }
    }
    logistic_gradients_any(scores, y, g, h);
}

/// Sets each of `counts` to a Poisson variate, exactly as
/// [`sample::poisson_counts_any`] does; with AVX-512 or AVX2 sixteen rows a step in
/// vector registers.
pub fn poisson_counts(
    lanes: &mut sample::Lanes,
    survival: &[u32; sample::POISSON_MAX],
    counts: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has AVX-512F, BW and VL, checked just above.
            return unsafe { avx512::poisson_counts(lanes, survival, counts) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::poisson_counts(lanes, survival, counts) };
        }
    }
    sample::poisson_counts_any(lanes, survival, counts);
}

/// Writes to `rows[..k]` every `i` with `counts[i] > 0`, in order, and returns `k`.
/// `rows` must be as long as `counts`. With AVX-512 sixteen rows a step, with AVX2
/// eight.
pub fn drawn_rows(counts: &[u8], rows: &mut [u32]) -> usize {
    assert_eq!(counts.len(), rows.len(), "one slot per row");
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            // SAFETY: the CPU has AVX-512F, BW and VL, checked just above.
            return unsafe { avx512::drawn_rows(counts, rows) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::drawn_rows(counts, rows) };
        }
    }
    drawn_rows_from(counts, rows, 0, 0)
}

/// Writes to `records[..k]` the record of every row `i` drawn (`counts[i] > 0`), in
/// order, and returns `k`: the row's `bins` with its count and label as
/// [`grow::class_code`](crate::grow::class_code) in the top byte. `records` must be as long as `counts`, as `bins` and `y`.
/// With AVX-512 eight rows a step, with AVX2 four.
pub fn drawn_records(counts: &[u8], y: &[u8], bins: &[u64], records: &mut [u64]) -> usize {
    let n = counts.len();
    assert!(
        y.len() == n && bins.len() == n && records.len() == n,
        "one label, bin record and slot per row"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed() && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { avx512::drawn_records(counts, y, bins, records) };
        }
        if avx2() {
            // SAFETY: the CPU has AVX2, checked by `avx2()`.
            return unsafe { avx2::drawn_records(counts, y, bins, records) };
        }
    }
    drawn_records_from(counts, y, bins, records, 0, 0)
}

/// [`drawn_records`] from row `start`, with `kept` records already written.
fn drawn_records_from(
    counts: &[u8],
    y: &[u8],
    bins: &[u64],
    records: &mut [u64],
    start: usize,
    mut kept: usize,
) -> usize {
    for i in start..counts.len() {
        let code = crate::grow::class_code(counts[i], y[i]);
        records[kept] = bins[i] | u64::from(code) << crate::grow::CODE_SHIFT;
        kept += usize::from(counts[i] > 0);
    }
    kept
}

/// [`drawn_rows`] from row `start`, with `kept` rows already written.
fn drawn_rows_from(counts: &[u8], rows: &mut [u32], start: usize, mut kept: usize) -> usize {
    // Branch-free: whether a row was drawn is a coin toss the predictor cannot learn.
    for (i, &c) in counts.iter().enumerate().skip(start) {
        rows[kept] = i as u32;
        kept += usize::from(c > 0);
    }
    kept
}

/// [`logistic_gradients`] for whatever vector width the caller was compiled for. The
/// arithmetic is IEEE (no fused multiply-adds), so every width gives the same bits.
#[inline(always)]
fn logistic_gradients_any(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
    for (((&s, &y), g), h) in scores.iter().zip(y).zip(g).zip(h) {
        let (gf, hf) = newton(s, y);
        *g = crate::grow::quantize(gf);
        *h = crate::grow::quantize(hf);
    }
}

/// A row's log-loss gradient and hessian before they are quantized.
#[inline(always)]
fn newton(score: f64, y: u8) -> (f64, f64) {
    let p = 1.0 / (1.0 + exp(-score));
    (p - f64::from(y), (p * (1.0 - p)).max(1e-16))
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

    use crate::sample;

    /// The portable arithmetic, compiled for AVX-512, a block of rows at a time into
    /// floats; then DQ's truncating conversion quantizes eight at once. Left to the
    /// compiler, Rust's saturating `as i64` became one scalar conversion per value,
    /// a third of the gradients' time; here every value is far inside i64's range.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) fn logistic_gradients(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
        const BLOCK: usize = 64;
        let scale = _mm512_set1_pd(crate::grow::SCALE);
        let blocks = scores.chunks(BLOCK).zip(y.chunks(BLOCK));
        for ((s, y), (g, h)) in blocks.zip(g.chunks_mut(BLOCK).zip(h.chunks_mut(BLOCK))) {
            let (mut gf, mut hf) = ([0.0; BLOCK], [0.0; BLOCK]);
            for (((&s, &y), gf), hf) in s.iter().zip(y).zip(&mut gf).zip(&mut hf) {
                (*gf, *hf) = super::newton(s, y);
            }
            let whole = g.len().min(h.len()) / 8 * 8;
            for k in (0..whole).step_by(8) {
                // SAFETY: k + 8 <= whole, within g, h and the two blocks of floats.
                unsafe {
                    let gq = _mm512_cvttpd_epi64(_mm512_mul_pd(
                        _mm512_loadu_pd(gf.as_ptr().add(k)),
                        scale,
                    ));
                    let hq = _mm512_cvttpd_epi64(_mm512_mul_pd(
                        _mm512_loadu_pd(hf.as_ptr().add(k)),
                        scale,
                    ));
                    _mm512_storeu_si512(g.as_mut_ptr().add(k).cast(), gq);
                    _mm512_storeu_si512(h.as_mut_ptr().add(k).cast(), hq);
                }
            }
            for k in whole..g.len().min(h.len()) {
                g[k] = crate::grow::quantize(gf[k]);
                h[k] = crate::grow::quantize(hf[k]);
            }
        }
    }

    /// The eight generators' words in four registers, and sixteen rows' counts a
    /// step: each row's uniform is a u32 lane, compared with every threshold. (Left
    /// to itself the compiler moves the rotates and the counts out to scalar
    /// registers.) The remainder goes to the portable loop, which carries on the
    /// same streams.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn poisson_counts(
        lanes: &mut sample::Lanes,
        survival: &[u32; sample::POISSON_MAX],
        counts: &mut [u8],
    ) {
        let load = |w: &[u64; sample::LANES]| {
            // SAFETY: a word holds eight u64, 64 bytes: one unaligned load.
            unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
        };
        let [mut s0, mut s1, mut s2, mut s3] = lanes.s.each_ref().map(load);
        let thresholds = survival.map(|t| _mm512_set1_epi32(t as i32));
        let one = _mm_set1_epi8(1);
        let mut chunks = counts.chunks_exact_mut(2 * sample::LANES);
        for chunk in &mut chunks {
            let u = _mm512_add_epi64(_mm512_rol_epi64::<23>(_mm512_add_epi64(s0, s3)), s0);
            let t = _mm512_slli_epi64::<17>(s1);
            s2 = _mm512_xor_si512(s2, s0);
            s3 = _mm512_xor_si512(s3, s1);
            s1 = _mm512_xor_si512(s1, s2);
            s0 = _mm512_xor_si512(s0, s3);
            s2 = _mm512_xor_si512(s2, t);
            s3 = _mm512_rol_epi64::<45>(s3);
            // Lane j's count is byte j, added to under the compare's mask bit j.
            // Counts above 4 are rare (under 0.4% of rows at λ = 1): their
            // thresholds are compared only when some lane needs them.
            let mut c = _mm_setzero_si128();
            for &threshold in &thresholds[..4] {
                let below = _mm512_cmplt_epu32_mask(u, threshold);
                c = _mm_mask_add_epi8(c, below, c, one);
            }
            if _mm512_cmplt_epu32_mask(u, thresholds[4]) != 0 {
                for &threshold in &thresholds[4..] {
                    let below = _mm512_cmplt_epu32_mask(u, threshold);
                    c = _mm_mask_add_epi8(c, below, c, one);
                }
            }
            // SAFETY: the chunk is 16 bytes.
            unsafe { _mm_storeu_si128(chunk.as_mut_ptr().cast(), c) };
        }
        for (w, v) in lanes.s.iter_mut().zip([s0, s1, s2, s3]) {
            // SAFETY: as for the loads.
            unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), v) };
        }
        sample::poisson_counts_any(lanes, survival, chunks.into_remainder());
    }

    /// Sixteen rows a step: their counts' nonzero bytes are a mask that compresses
    /// the sixteen row numbers into one vector, stored whole; the lanes past the kept
    /// ones are overwritten by the next step or by the scalar tail.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) fn drawn_rows(counts: &[u8], rows: &mut [u32]) -> usize {
        let n = counts.len().min(rows.len()).min(i32::MAX as usize);
        let mut index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let step = _mm512_set1_epi32(16);
        let (mut kept, mut i) = (0, 0);
        while i + 16 <= n {
            // SAFETY: i + 16 <= counts.len().
            let c = unsafe { _mm_loadu_si128(counts.as_ptr().add(i).cast()) };
            let drawn = _mm_test_epi8_mask(c, c);
            // SAFETY: kept <= i (each row before i was kept at most once), so the
            // sixteen lanes land below i + 16 <= rows.len().
            unsafe {
                _mm512_storeu_si512(
                    rows.as_mut_ptr().add(kept).cast(),
                    _mm512_maskz_compress_epi32(drawn, index),
                );
            }
            kept += drawn.count_ones() as usize;
            index = _mm512_add_epi32(index, step);
            i += 16;
        }
        super::drawn_rows_from(counts, rows, i, kept)
    }

    /// Eight rows a step: their counts and labels widened to 64-bit lanes make the
    /// codes, and the drawn rows' records are compressed into one vector stored
    /// whole, as in [`drawn_rows`].
    #[target_feature(enable = "avx512f")]
    pub(super) fn drawn_records(
        counts: &[u8],
        y: &[u8],
        bins: &[u64],
        records: &mut [u64],
    ) -> usize {
        let n = counts.len();
        let cap = _mm512_set1_epi64(i64::from(crate::grow::MAX_WEIGHT));
        let one = _mm512_set1_epi64(1);
        let (mut kept, mut i) = (0, 0);
        while i + 8 <= n {
            // SAFETY: i + 8 <= n, the length of counts, y and bins (checked by the caller).
            let (c, label, b) = unsafe {
                (
                    _mm512_cvtepu8_epi64(_mm_loadl_epi64(counts.as_ptr().add(i).cast())),
                    _mm512_cvtepu8_epi64(_mm_loadl_epi64(y.as_ptr().add(i).cast())),
                    _mm512_loadu_si512(bins.as_ptr().add(i).cast()),
                )
            };
            let drawn = _mm512_test_epi64_mask(c, c);
            let weight = _mm512_slli_epi64::<1>(_mm512_min_epu64(c, cap));
            let code = _mm512_or_si512(weight, _mm512_and_si512(label, one));
            const _: () = assert!(crate::grow::CODE_SHIFT == 56, "the shift below");
            let rec = _mm512_or_si512(b, _mm512_slli_epi64::<56>(code));
            // SAFETY: kept <= i, so the eight lanes land below i + 8 <= records.len().
            unsafe {
                _mm512_storeu_si512(
                    records.as_mut_ptr().add(kept).cast(),
                    _mm512_maskz_compress_epi64(drawn, rec),
                );
            }
            kept += drawn.count_ones() as usize;
            i += 8;
        }
        super::drawn_records_from(counts, y, bins, records, i, kept)
    }

    /// Eight records a step: each one's byte is looked up in the 256-byte table by
    /// two 128-byte permutes, the result compared, and each side's records
    /// compressed into one vector stored whole, as in [`partition_prefix`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) fn partition_records_prefix(
        records: &mut [u64],
        scratch: &mut [u64],
        shift: u32,
        bins: &[u8; 256],
        bin: u8,
    ) -> (usize, usize, usize) {
        let n = records.len().min(scratch.len());
        // SAFETY: four 64-byte loads inside the 256-byte table.
        let table =
            [0, 64, 128, 192].map(|at| unsafe { _mm512_loadu_si512(bins.as_ptr().add(at).cast()) });
        let shift = _mm_cvtsi32_si128(shift as i32);
        let low_byte = _mm512_set1_epi64(0xFF);
        let limit = _mm512_set1_epi64(i64::from(bin));
        let (mut l, mut r, mut i) = (0, 0, 0);
        while i + 8 <= n {
            // SAFETY: i + 8 <= records.len().
            let v = unsafe { _mm512_loadu_si512(records.as_ptr().add(i).cast()) };
            let byte = _mm512_and_si512(_mm512_srl_epi64(v, shift), low_byte);
            // Each permute reads the index's low seven bits; the eighth picks one.
            let low = _mm512_permutex2var_epi8(table[0], byte, table[1]);
            let high = _mm512_permutex2var_epi8(table[2], byte, table[3]);
            let looked_up = _mm512_mask_blend_epi8(_mm512_movepi8_mask(byte), low, high);
            let left = _mm512_cmple_epu64_mask(_mm512_and_si512(looked_up, low_byte), limit);
            // SAFETY: l + r == i, so both stores of eight lanes end by i + 8 <= n, and
            // the store to `records` writes only records already loaded.
            unsafe {
                _mm512_storeu_si512(
                    records.as_mut_ptr().add(l).cast(),
                    _mm512_maskz_compress_epi64(left, v),
                );
                _mm512_storeu_si512(
                    scratch.as_mut_ptr().add(r).cast(),
                    _mm512_maskz_compress_epi64(!left, v),
                );
            }
            let k = left.count_ones() as usize;
            l += k;
            r += 8 - k;
            i += 8;
        }
        (l, r, i)
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

/// The AVX2 kernels: the AVX-512 ones' steps at half the width, with what AVX2 lacks
/// built from what it has. It has no compress, so a step's kept lanes are moved to
/// the front by a permute looked up from the step's mask ([`COMPRESS8`],
/// [`COMPRESS4`]); no unsigned compare, so unsigned lanes are compared with their
/// sign bits flipped; and no conversion from f64 to i64, so quantizing adds a power of
/// two that leaves the integer in the low bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::sample;

    /// For each mask of eight 32-bit lanes, the permute that moves the set lanes, in
    /// order, to the front (the rest take lane 0; they are overwritten later).
    static COMPRESS8: [[u32; 8]; 256] = {
        let mut t = [[0u32; 8]; 256];
        let mut m = 0;
        while m < 256 {
            let (mut k, mut lane) = (0, 0);
            while lane < 8 {
                if m & (1 << lane) != 0 {
                    t[m][k] = lane as u32;
                    k += 1;
                }
                lane += 1;
            }
            m += 1;
        }
        t
    };

    /// [`COMPRESS8`] for four 64-bit lanes, as pairs of 32-bit lanes.
    static COMPRESS4: [[u32; 8]; 16] = {
        let mut t = [[0u32; 8]; 16];
        let mut m = 0;
        while m < 16 {
            let (mut k, mut lane) = (0, 0);
            while lane < 4 {
                if m & (1 << lane) != 0 {
                    t[m][2 * k] = 2 * lane as u32;
                    t[m][2 * k + 1] = 2 * lane as u32 + 1;
                    k += 1;
                }
                lane += 1;
            }
            m += 1;
        }
        t
    };

    #[inline]
    #[target_feature(enable = "avx2")]
    fn compress8(v: __m256i, mask: usize) -> __m256i {
        // SAFETY: a table row is eight u32, 32 bytes, inside the table (mask < 256).
        let perm = unsafe { _mm256_loadu_si256(COMPRESS8[mask & 0xFF].as_ptr().cast()) };
        _mm256_permutevar8x32_epi32(v, perm)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn compress4(v: __m256i, mask: usize) -> __m256i {
        // SAFETY: as in `compress8`, with mask < 16.
        let perm = unsafe { _mm256_loadu_si256(COMPRESS4[mask & 0xF].as_ptr().cast()) };
        _mm256_permutevar8x32_epi32(v, perm)
    }

    /// The portable arithmetic compiled for AVX2, a block of rows at a time into
    /// floats, then quantized four at a time: `x` truncated toward zero, plus 1.5·2^52,
    /// has the integer in its low mantissa bits, exactly as `x as i64` for
    /// |x| < 2^51 (a gradient is at most 2^32 here). NaN gives 0, as `as i64` does.
    #[target_feature(enable = "avx2")]
    pub(super) fn logistic_gradients(scores: &[f64], y: &[u8], g: &mut [i64], h: &mut [i64]) {
        const BLOCK: usize = 64;
        const ROUND: f64 = 6_755_399_441_055_744.0;
        let scale = _mm256_set1_pd(crate::grow::SCALE);
        let round = _mm256_set1_pd(ROUND);
        let round_bits = _mm256_set1_epi64x(ROUND.to_bits() as i64);
        let quantize = |x: __m256d| {
            let x = _mm256_mul_pd(x, scale);
            let t = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let t = _mm256_and_pd(t, _mm256_cmp_pd::<_CMP_ORD_Q>(x, x));
            _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(t, round)), round_bits)
        };
        let blocks = scores.chunks(BLOCK).zip(y.chunks(BLOCK));
        for ((s, y), (g, h)) in blocks.zip(g.chunks_mut(BLOCK).zip(h.chunks_mut(BLOCK))) {
            let (mut gf, mut hf) = ([0.0; BLOCK], [0.0; BLOCK]);
            for (((&s, &y), gf), hf) in s.iter().zip(y).zip(&mut gf).zip(&mut hf) {
                (*gf, *hf) = super::newton(s, y);
            }
            let whole = g.len().min(h.len()) / 4 * 4;
            for k in (0..whole).step_by(4) {
                // SAFETY: k + 4 <= whole, within g, h and the two blocks of floats.
                unsafe {
                    let gq = quantize(_mm256_loadu_pd(gf.as_ptr().add(k)));
                    let hq = quantize(_mm256_loadu_pd(hf.as_ptr().add(k)));
                    _mm256_storeu_si256(g.as_mut_ptr().add(k).cast(), gq);
                    _mm256_storeu_si256(h.as_mut_ptr().add(k).cast(), hq);
                }
            }
            for k in whole..g.len().min(h.len()) {
                g[k] = crate::grow::quantize(gf[k]);
                h[k] = crate::grow::quantize(hf[k]);
            }
        }
    }

    /// The eight generators' words in eight registers (four lanes each), sixteen rows'
    /// counts a step, as in the AVX-512 kernel; rotates are two shifts, and a row's
    /// count is the number of thresholds its uniform is below, compared signed with
    /// both sign bits flipped.
    #[target_feature(enable = "avx2")]
    pub(super) fn poisson_counts(
        lanes: &mut sample::Lanes,
        survival: &[u32; sample::POISSON_MAX],
        counts: &mut [u8],
    ) {
        macro_rules! rol {
            ($x:expr, $l:literal, $r:literal) => {
                _mm256_or_si256(_mm256_slli_epi64::<$l>($x), _mm256_srli_epi64::<$r>($x))
            };
        }
        let load = |w: &[u64; sample::LANES], at: usize| {
            // SAFETY: at is 0 or 4, and four u64 from there are inside the word.
            unsafe { _mm256_loadu_si256(w.as_ptr().add(at).cast()) }
        };
        let mut s = [[_mm256_setzero_si256(); 4]; 2];
        for (half, at) in [(0, 0), (1, 4)] {
            for (w, word) in lanes.s.iter().enumerate() {
                s[half][w] = load(word, at);
            }
        }
        let flip = _mm256_set1_epi32(i32::MIN);
        let thresholds = survival.map(|t| _mm256_set1_epi32((t ^ 0x8000_0000) as i32));
        let mut chunks = counts.chunks_exact_mut(2 * sample::LANES);
        for chunk in &mut chunks {
            let mut u = [_mm256_setzero_si256(); 2];
            for (u, [s0, s1, s2, s3]) in u.iter_mut().zip(&mut s) {
                *u = _mm256_add_epi64(rol!(_mm256_add_epi64(*s0, *s3), 23, 41), *s0);
                let t = _mm256_slli_epi64::<17>(*s1);
                *s2 = _mm256_xor_si256(*s2, *s0);
                *s3 = _mm256_xor_si256(*s3, *s1);
                *s1 = _mm256_xor_si256(*s1, *s2);
                *s0 = _mm256_xor_si256(*s0, *s3);
                *s2 = _mm256_xor_si256(*s2, t);
                *s3 = rol!(*s3, 45, 19);
                *u = _mm256_xor_si256(*u, flip);
            }
            // A compare's true lane is -1: subtracting it counts. Counts above 4 are
            // rare, as in the AVX-512 kernel.
            let mut c = [_mm256_setzero_si256(); 2];
            for threshold in &thresholds[..4] {
                for (c, &u) in c.iter_mut().zip(&u) {
                    *c = _mm256_sub_epi32(*c, _mm256_cmpgt_epi32(*threshold, u));
                }
            }
            let rare = _mm256_or_si256(
                _mm256_cmpgt_epi32(thresholds[4], u[0]),
                _mm256_cmpgt_epi32(thresholds[4], u[1]),
            );
            if _mm256_movemask_epi8(rare) != 0 {
                for threshold in &thresholds[4..] {
                    for (c, &u) in c.iter_mut().zip(&u) {
                        *c = _mm256_sub_epi32(*c, _mm256_cmpgt_epi32(*threshold, u));
                    }
                }
            }
            // i32 → i16 packs within 128-bit halves; the permute puts rows back in
            // order before the i16 → u8 pack.
            let c16 = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(c[0], c[1]));
            let c8 = _mm_packus_epi16(
                _mm256_castsi256_si128(c16),
                _mm256_extracti128_si256::<1>(c16),
            );
            // SAFETY: the chunk is 16 bytes.
            unsafe { _mm_storeu_si128(chunk.as_mut_ptr().cast(), c8) };
        }
        for (half, at) in [(0, 0), (1, 4)] {
            for (w, word) in lanes.s.iter_mut().enumerate() {
                // SAFETY: as for the loads.
                unsafe { _mm256_storeu_si256(word.as_mut_ptr().add(at).cast(), s[half][w]) };
            }
        }
        sample::poisson_counts_any(lanes, survival, chunks.into_remainder());
    }

    /// Eight rows a step: the zero bytes of their counts are a mask whose complement
    /// picks the permute that moves the drawn rows' numbers to the front of one
    /// vector, stored whole; the lanes past the kept ones are overwritten by the next
    /// step or by the scalar tail.
    #[target_feature(enable = "avx2")]
    pub(super) fn drawn_rows(counts: &[u8], rows: &mut [u32]) -> usize {
        let n = counts.len().min(rows.len()).min(i32::MAX as usize);
        let mut index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let step = _mm256_set1_epi32(8);
        let zero = _mm_setzero_si128();
        let (mut kept, mut i) = (0, 0);
        while i + 8 <= n {
            // SAFETY: i + 8 <= counts.len(): an eight-byte load.
            let c = unsafe { _mm_loadl_epi64(counts.as_ptr().add(i).cast()) };
            let drawn = !_mm_movemask_epi8(_mm_cmpeq_epi8(c, zero)) as usize & 0xFF;
            // SAFETY: kept <= i, so the eight lanes land below i + 8 <= rows.len().
            unsafe {
                _mm256_storeu_si256(rows.as_mut_ptr().add(kept).cast(), compress8(index, drawn));
            }
            kept += drawn.count_ones() as usize;
            index = _mm256_add_epi32(index, step);
            i += 8;
        }
        super::drawn_rows_from(counts, rows, i, kept)
    }

    /// Four rows a step: counts capped and labels added as bytes, widened to 64-bit
    /// lanes as the codes, and the drawn rows' records moved to the front and stored
    /// whole, as in [`drawn_rows`].
    #[target_feature(enable = "avx2")]
    pub(super) fn drawn_records(
        counts: &[u8],
        y: &[u8],
        bins: &[u64],
        records: &mut [u64],
    ) -> usize {
        let n = counts.len();
        let cap = _mm_set1_epi8(crate::grow::MAX_WEIGHT as i8);
        let one = _mm_set1_epi8(1);
        let zero = _mm256_setzero_si256();
        let (mut kept, mut i) = (0, 0);
        while i + 4 <= n {
            // SAFETY: i + 4 <= n, the length of counts, y and bins (checked by the
            // caller): four bytes each of counts and y, four u64 of bins.
            let (c, label, b) = unsafe {
                (
                    _mm_cvtsi32_si128(counts.as_ptr().add(i).cast::<i32>().read_unaligned()),
                    _mm_cvtsi32_si128(y.as_ptr().add(i).cast::<i32>().read_unaligned()),
                    _mm256_loadu_si256(bins.as_ptr().add(i).cast()),
                )
            };
            let weight = _mm_min_epu8(c, cap);
            let code = _mm_or_si128(_mm_add_epi8(weight, weight), _mm_and_si128(label, one));
            const _: () = assert!(crate::grow::CODE_SHIFT == 56, "the shift below");
            let rec = _mm256_or_si256(b, _mm256_slli_epi64::<56>(_mm256_cvtepu8_epi64(code)));
            let undrawn = _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(c), zero);
            let drawn = !_mm256_movemask_pd(_mm256_castsi256_pd(undrawn)) as usize & 0xF;
            // SAFETY: kept <= i, so the four lanes land below i + 4 <= records.len().
            unsafe {
                _mm256_storeu_si256(records.as_mut_ptr().add(kept).cast(), compress4(rec, drawn));
            }
            kept += drawn.count_ones() as usize;
            i += 4;
        }
        super::drawn_records_from(counts, y, bins, records, i, kept)
    }

    /// Four records a step: which way each goes is a bit of a 256-bit set (bit `b` set
    /// when byte `b` goes right), looked up with byte shuffles, and each side's records
    /// are moved to the front of one vector stored whole. A gather of the table's
    /// bytes did the lookup before; on AMD Zen a gather is microcode, and the kernel
    /// ran at a third of the AVX-512 one's speed. Short stretches are left to the
    /// caller: building the set would cost more.
    #[target_feature(enable = "avx2")]
    pub(super) fn partition_records_prefix(
        records: &mut [u64],
        scratch: &mut [u64],
        shift: u32,
        bins: &[u8; 256],
        bin: u8,
    ) -> (usize, usize, usize) {
        let n = records.len().min(scratch.len());
        if n < 64 {
            return (0, 0, 0);
        }
        let mut set = [0u8; 32];
        for (b, &t) in bins.iter().enumerate() {
            set[b >> 3] |= u8::from(t > bin) << (b & 7);
        }
        // SAFETY: two 16-byte loads inside the 32-byte set.
        let (set_lo, set_hi) = unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(set.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(set.as_ptr().add(16).cast())),
            )
        };
        let bit_of = _mm256_setr_epi8(
            1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64,
            -128, 1, 2, 4, 8, 16, 32, 64, -128,
        );
        let shift = _mm_cvtsi32_si128(shift as i32);
        let (seven, fifteen, low5) = (
            _mm256_set1_epi8(7),
            _mm256_set1_epi8(15),
            _mm256_set1_epi8(0x1F),
        );
        let (mut l, mut r, mut i) = (0, 0, 0);
        while i + 4 <= n {
            // SAFETY: i + 4 <= records.len().
            let v = unsafe { _mm256_loadu_si256(records.as_ptr().add(i).cast()) };
            // Only byte 0 of each 64-bit lane is a record's byte; the others are
            // looked up too and ignored.
            let byte = _mm256_srl_epi64(v, shift);
            let word_at = _mm256_and_si256(_mm256_srli_epi16::<3>(byte), low5);
            let word = _mm256_blendv_epi8(
                _mm256_shuffle_epi8(set_lo, word_at),
                _mm256_shuffle_epi8(set_hi, word_at),
                _mm256_cmpgt_epi8(word_at, fifteen),
            );
            let bit = _mm256_shuffle_epi8(bit_of, _mm256_and_si256(byte, seven));
            let goes_right = _mm256_cmpeq_epi8(_mm256_and_si256(word, bit), bit);
            // Byte 0's answer to each lane's sign bit.
            let right = _mm256_slli_epi64::<56>(goes_right);
            let right = _mm256_movemask_pd(_mm256_castsi256_pd(right)) as usize;
            let left = !right & 0xF;
            // SAFETY: l + r == i, so both stores of four lanes end by i + 4 <= n, and
            // the store to `records` writes only records already loaded.
            unsafe {
                _mm256_storeu_si256(records.as_mut_ptr().add(l).cast(), compress4(v, left));
                _mm256_storeu_si256(scratch.as_mut_ptr().add(r).cast(), compress4(v, right));
            }
            let k = left.count_ones() as usize;
            l += k;
            r += 4 - k;
            i += 4;
        }
        (l, r, i)
    }

    /// Eight rows a step: gather their bins, compare, and move each side's rows to the
    /// front of one vector stored whole, as in the AVX-512 kernel.
    #[target_feature(enable = "avx2")]
    pub(super) fn partition_prefix(
        rows: &mut [u32],
        scratch: &mut [u32],
        col: &[u8],
        bin: u8,
    ) -> (usize, usize, usize) {
        let n = rows.len().min(scratch.len());
        // A gather reads four bytes at `col + row`: rows below this read inside `col`
        // (and are positive as i32, as the gather's offsets must be).
        let readable = col.len().saturating_sub(3).min(i32::MAX as usize) as i32;
        if readable == 0 {
            return (0, 0, 0);
        }
        let last_readable = _mm256_set1_epi32(readable - 1);
        let limit = _mm256_set1_epi32(i32::from(bin));
        let low_byte = _mm256_set1_epi32(0xFF);
        let (mut l, mut r, mut i) = (0, 0, 0);
        while i + 8 <= n {
            // SAFETY: i + 8 <= rows.len(): the 8 lanes are inside `rows`.
            let v = unsafe { _mm256_loadu_si256(rows.as_ptr().add(i).cast()) };
            // Unsigned v <= last_readable, for every lane.
            let inside = _mm256_cmpeq_epi32(_mm256_max_epu32(v, last_readable), last_readable);
            if _mm256_movemask_epi8(inside) != -1 {
                // A row near the end of `col`: the scalar loop takes it from here.
                break;
            }
            // SAFETY: every lane's row is below `col.len() - 3`, so the four bytes it
            // reads are inside `col`.
            let got = unsafe { _mm256_i32gather_epi32::<1>(col.as_ptr().cast(), v) };
            let right = _mm256_cmpgt_epi32(_mm256_and_si256(got, low_byte), limit);
            let right = _mm256_movemask_ps(_mm256_castsi256_ps(right)) as usize;
            let left = !right & 0xFF;
            // SAFETY: every row before `i` went to exactly one side, so l + r == i and
            // l + 8 <= i + 8 <= rows.len(), r + 8 <= scratch.len(). The store to
            // `rows` writes only below i + 8: rows already loaded.
            unsafe {
                _mm256_storeu_si256(rows.as_mut_ptr().add(l).cast(), compress8(v, left));
                _mm256_storeu_si256(scratch.as_mut_ptr().add(r).cast(), compress8(v, right));
            }
            let k = left.count_ones() as usize;
            l += k;
            r += 8 - k;
            i += 8;
        }
        (l, r, i)
    }
}

/// Running the AVX-512 kernels themselves, for tests: the public functions fall back
/// to the scalar loops on a CPU without AVX-512, so comparing them with the scalar
/// loops there would compare the scalar loops with themselves.
#[cfg(test)]
pub(crate) mod testing {
    /// The environment variable that turns a skipped AVX-512 test into a failure, for
    /// machines that are meant to run the kernels (this one, and CI's).
    pub(crate) const REQUIRE_AVX512: &str = "PREDICT_BUY_REQUIRE_AVX512";

    /// Whether the CPU has every one of `features`, so that `test` can run the AVX-512
    /// kernel it checks. When not, the test is skipped and says so on stderr, or fails
    /// when [`REQUIRE_AVX512`] is `1`.
    pub(crate) fn avx512_or_skip(test: &str, features: &[&str]) -> bool {
        let missing: Vec<&str> = features.iter().copied().filter(|f| !detected(f)).collect();
        if missing.is_empty() {
            return true;
        }
        let missing = missing.join(", ");
        assert!(
            std::env::var(REQUIRE_AVX512).as_deref() != Ok("1"),
            "{test}: {REQUIRE_AVX512}=1, but this CPU lacks {missing}"
        );
        eprintln!(
            "{test}: skipped: this CPU lacks {missing}, so the AVX-512 kernel cannot run \
             (set {REQUIRE_AVX512}=1 to make this a failure)"
        );
        false
    }

    /// Whether the CPU has AVX2, so that `test` can run the AVX2 kernel it checks;
    /// when not, the test says on stderr that it was skipped.
    pub(crate) fn avx2_or_skip(test: &str) -> bool {
        if detected("avx2") {
            return true;
        }
        eprintln!("{test}: skipped: this CPU lacks AVX2, so the AVX2 kernel cannot run");
        false
    }

    /// Run-time detection of one feature, by name (the detection macro takes literals).
    fn detected(feature: &str) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match feature {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
                other => panic!("no detection for CPU feature `{other}`"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = feature;
            false
        }
    }

    /// The AVX-512 Poisson kernel; call it only after [`avx512_or_skip`] with
    /// `avx512f`, `avx512bw` and `avx512vl`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn poisson_counts_avx512(
        lanes: &mut crate::sample::Lanes,
        survival: &[u32; crate::sample::POISSON_MAX],
        counts: &mut [u8],
    ) {
        assert!(
            detected("avx512f") && detected("avx512bw") && detected("avx512vl"),
            "the caller checks the CPU first"
        );
        // SAFETY: the CPU has AVX-512F, BW and VL, asserted just above.
        unsafe { super::avx512::poisson_counts(lanes, survival, counts) }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::testing::avx512_or_skip;

    /// The vector compaction of drawn rows agrees with the scalar loop and with the
    /// definition, at every length around the sixteen-row steps and for sparse and
    /// dense counts.
    #[test]
    fn drawn_rows_match_the_scalar_loop() {
        let test = "drawn_rows_match_the_scalar_loop";
        if !avx512_or_skip(test, &["avx512f", "avx512bw", "avx512vl"]) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(6);
            for n in 0..200 {
                for p in [0.05, 0.63, 1.0] {
                    let counts: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(p))).collect();
                    let (mut a, mut b) = (vec![0; n], vec![0; n]);
                    // SAFETY: the CPU has AVX-512F, BW and VL, checked above.
                    let k = unsafe { super::avx512::drawn_rows(&counts, &mut a) };
                    assert_eq!(k, super::drawn_rows_from(&counts, &mut b, 0, 0));
                    assert_eq!(a[..k], b[..k]);
                    let expected: Vec<u32> =
                        (0..n as u32).filter(|&i| counts[i as usize] > 0).collect();
                    assert_eq!(a[..k], expected[..], "{n} rows, p {p}");
                }
            }
        }
    }

    /// The vector compaction of drawn rows' records agrees with the scalar loop, at
    /// every length around the eight-row steps, with counts above the weight cap.
    #[test]
    fn drawn_records_match_the_scalar_loop() {
        if !avx512_or_skip("drawn_records_match_the_scalar_loop", &["avx512f"]) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for n in 0..100 {
                for p in [0.05, 0.63, 1.0] {
                    let counts: Vec<u8> = (0..n)
                        .map(|_| {
                            if rng.random_bool(p) {
                                rng.random_range(1..=255)
                            } else {
                                0
                            }
                        })
                        .collect();
                    let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..2)).collect();
                    let bins: Vec<u64> = (0..n).map(|_| rng.random::<u64>() >> 8).collect();
                    let (mut a, mut b) = (vec![0; n], vec![0; n]);
                    // SAFETY: the CPU has AVX-512F, checked above.
                    let k = unsafe { super::avx512::drawn_records(&counts, &y, &bins, &mut a) };
                    assert_eq!(
                        k,
                        super::drawn_records_from(&counts, &y, &bins, &mut b, 0, 0)
                    );
                    assert_eq!(a[..k], b[..k]);
                    let expected: Vec<u64> = (0..n)
                        .filter(|&i| counts[i] > 0)
                        .map(|i| {
                            bins[i] | u64::from(counts[i].min(127)) << 57 | u64::from(y[i]) << 56
                        })
                        .collect();
                    assert_eq!(a[..k], expected[..]);
                }
            }
        }
    }

    /// The AVX-512 build of the gradient loop gives the same bits as the portable one
    /// (no fused multiply-adds, no reassociation), so models do not depend on the CPU.
    #[test]
    fn gradients_are_the_same_bits_on_every_cpu() {
        let test = "gradients_are_the_same_bits_on_every_cpu";
        if !avx512_or_skip(test, &["avx512f", "avx512dq"]) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            // Not a multiple of the eight-row steps or the 64-row blocks: the scalar
            // tails run too.
            let n = 4099;
            let mut scores: Vec<f64> = (0..n).map(|_| rng.random_range(-40.0..40.0)).collect();
            // Far outside `exp`'s range, where it saturates.
            scores[..4].copy_from_slice(&[800.0, -800.0, 0.0, 1e-300]);
            let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..2)).collect();
            let (mut g1, mut h1, mut g2, mut h2) = (vec![0; n], vec![0; n], vec![0; n], vec![0; n]);
            // SAFETY: the CPU has AVX-512F and DQ, checked above.
            unsafe { super::avx512::logistic_gradients(&scores, &y, &mut g1, &mut h1) };
            super::logistic_gradients_any(&scores, &y, &mut g2, &mut h2);
            assert!(g1.iter().any(|&g| g != 0) && h1.iter().any(|&h| h > 0));
            assert_eq!((g1, h1), (g2, h2));
        }
    }

    #[test]
    fn the_cap_is_read_from_its_names() {
        use super::Level;
        assert_eq!(Level::cap_from(Some("avx2")), Level::Avx2);
        assert_eq!(Level::cap_from(Some(" AVX2 ")), Level::Avx2);
        assert_eq!(Level::cap_from(Some("scalar")), Level::Scalar);
        assert_eq!(Level::cap_from(Some("native")), Level::Avx512);
        assert_eq!(Level::cap_from(Some("sse9")), Level::Avx512);
        assert_eq!(Level::cap_from(None), Level::Avx512);
        assert!(super::level() <= Level::Avx512);
        for l in [Level::Scalar, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::cap_from(Some(l.name())), l);
        }
    }

    /// Lengths that cover no step, one step, steps with every tail, and a long run.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..=70).chain([255, 256, 257, 1000, 4099])
    }

    /// A stable partition by `left`, the definition the kernels must meet.
    fn stable<T: Copy>(v: &[T], left: impl Fn(T) -> bool) -> (Vec<T>, usize) {
        let mut out: Vec<T> = v.iter().copied().filter(|&x| left(x)).collect();
        let l = out.len();
        out.extend(v.iter().copied().filter(|&x| !left(x)));
        (out, l)
    }

    /// The AVX2 row partition, finished by the scalar loop as the grower finishes it,
    /// is the stable partition: random bins, all-equal bins (every row on one side),
    /// rows at the very end of a short column, and columns too short to gather from.
    #[test]
    fn avx2_row_partition_is_the_stable_partition() {
        if !super::testing::avx2_or_skip("avx2_row_partition_is_the_stable_partition") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(21);
            for n in lengths() {
                for case in 0..5 {
                    let col_len = match case {
                        3 => rng.random_range(0..5),
                        _ => n + rng.random_range(0..4),
                    };
                    let col: Vec<u8> = (0..col_len)
                        .map(|_| if case == 1 { 7 } else { rng.random() })
                        .collect();
                    let rows: Vec<u32> = if col_len == 0 {
                        Vec::new()
                    } else if case == 4 {
                        // The last rows of the column, where a gather would overrun.
                        (0..n)
                            .map(|i| (col_len - 1 - i % col_len.min(4)) as u32)
                            .collect()
                    } else {
                        (0..n)
                            .map(|_| rng.random_range(0..col_len) as u32)
                            .collect()
                    };
                    for bin in [0u8, 7, 6, 128, 255] {
                        let (mut got, mut scratch) = (rows.clone(), vec![0u32; rows.len()]);
                        // SAFETY: the CPU has AVX2, checked above.
                        let (mut l, mut r, done) = unsafe {
                            super::avx2::partition_prefix(&mut got, &mut scratch, &col, bin)
                        };
                        assert_eq!(l + r, done);
                        for i in done..got.len() {
                            let row = got[i];
                            if col[row as usize] <= bin {
                                got[l] = row;
                                l += 1;
                            } else {
                                scratch[r] = row;
                                r += 1;
                            }
                        }
                        got[l..].copy_from_slice(&scratch[..r]);
                        let (expected, el) = stable(&rows, |row| col[row as usize] <= bin);
                        assert_eq!((got, l), (expected, el), "{n} rows, case {case}, bin {bin}");
                    }
                }
            }
        }
    }

    /// The AVX2 record partition, finished by the scalar loop, is the stable partition
    /// by the looked-up byte, at every shift.
    #[test]
    fn avx2_record_partition_is_the_stable_partition() {
        if !super::testing::avx2_or_skip("avx2_record_partition_is_the_stable_partition") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(22);
            for n in lengths().chain(60..140) {
                for case in 0..3 {
                    let mut table = [0u8; 256];
                    for t in &mut table {
                        *t = if case == 1 { 9 } else { rng.random() };
                    }
                    let records: Vec<u64> = (0..n).map(|_| rng.random()).collect();
                    let shift = 8 * rng.random_range(0..8u32);
                    for bin in [0u8, 9, 8, 100, 255] {
                        let look = |rec: u64| table[usize::from((rec >> shift) as u8)] <= bin;
                        let (mut got, mut scratch) = (records.clone(), vec![0u64; n]);
                        // SAFETY: the CPU has AVX2, checked above.
                        let (mut l, mut r, done) = unsafe {
                            super::avx2::partition_records_prefix(
                                &mut got,
                                &mut scratch,
                                shift,
                                &table,
                                bin,
                            )
                        };
                        assert_eq!(l + r, done);
                        for i in done..n {
                            let rec = got[i];
                            if look(rec) {
                                got[l] = rec;
                                l += 1;
                            } else {
                                scratch[r] = rec;
                                r += 1;
                            }
                        }
                        got[l..].copy_from_slice(&scratch[..r]);
                        assert_eq!((got, l), stable(&records, look), "{n} records, bin {bin}");
                    }
                }
            }
        }
    }

    /// The AVX2 gradients are the portable loop's bits, at every tail length, at
    /// `exp`'s saturation, for all-equal scores and for a NaN score (which the
    /// portable loop quantizes to 0).
    #[test]
    fn avx2_gradients_are_the_portable_bits() {
        if !super::testing::avx2_or_skip("avx2_gradients_are_the_portable_bits") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(23);
            for n in lengths() {
                for case in 0..3 {
                    let mut scores: Vec<f64> = (0..n)
                        .map(|_| match case {
                            0 => rng.random_range(-40.0..40.0),
                            1 => 0.3,
                            _ => rng.random_range(-1e3..1e3),
                        })
                        .collect();
                    if case == 2 && n > 3 {
                        scores[..4].copy_from_slice(&[f64::NAN, 800.0, -800.0, -0.0]);
                    }
                    let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..2)).collect();
                    let (mut g1, mut h1) = (vec![1; n], vec![1; n]);
                    let (mut g2, mut h2) = (vec![2; n], vec![2; n]);
                    // SAFETY: the CPU has AVX2, checked above.
                    unsafe { super::avx2::logistic_gradients(&scores, &y, &mut g1, &mut h1) };
                    super::logistic_gradients_any(&scores, &y, &mut g2, &mut h2);
                    assert_eq!((&g1, &h1), (&g2, &h2), "{n} rows, case {case}");
                    if n > 3 && case == 2 {
                        assert_eq!(g1[0], 0, "NaN quantizes to 0");
                    }
                }
            }
        }
    }

    /// The AVX2 Poisson counts are the portable loop's, and the generators are left in
    /// the same state, at every length (the tail goes to the portable loop).
    #[test]
    fn avx2_poisson_counts_are_the_portable_counts() {
        if !super::testing::avx2_or_skip("avx2_poisson_counts_are_the_portable_counts") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use crate::sample::{Lanes, POISSON_MAX, poisson_counts_any};
            // λ = 1 and a large λ-like table, so that counts above 4 are common and
            // the rare thresholds are compared too.
            let mut heavy = [0u32; POISSON_MAX];
            for (k, t) in heavy.iter_mut().enumerate() {
                *t = u32::MAX - (k as u32) * (u32::MAX / 16);
            }
            let mut survival = [0u32; POISSON_MAX];
            let e = (-1.0f64).exp();
            let (mut pmf, mut tail) = (e, 1.0 - e);
            for (k, s) in survival.iter_mut().enumerate() {
                *s = (tail * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32;
                pmf *= 1.0 / (k + 1) as f64;
                tail -= pmf;
            }
            for n in lengths().chain([1_000_003]) {
                for table in [&survival, &heavy] {
                    let mut a = Lanes::seed(&mut ChaCha8Rng::seed_from_u64(n as u64));
                    let mut b = Lanes::seed(&mut ChaCha8Rng::seed_from_u64(n as u64));
                    let (mut ca, mut cb) = (vec![0xAA; n], vec![0x55; n]);
                    // SAFETY: the CPU has AVX2, checked above.
                    unsafe { super::avx2::poisson_counts(&mut a, table, &mut ca) };
                    poisson_counts_any(&mut b, table, &mut cb);
                    let first_diff = ca.iter().zip(&cb).position(|(x, y)| x != y);
                    assert_eq!(first_diff, None, "{n} rows");
                    assert_eq!(a.s, b.s, "{n} rows: the generators' states");
                }
            }
        }
    }

    /// The AVX2 drawn-row list is the scalar loop's and the definition's, for no, few,
    /// most and all rows drawn.
    #[test]
    fn avx2_drawn_rows_match_the_scalar_loop() {
        if !super::testing::avx2_or_skip("avx2_drawn_rows_match_the_scalar_loop") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(24);
            for n in lengths() {
                for p in [0.0, 0.05, 0.63, 1.0] {
                    let counts: Vec<u8> = (0..n)
                        .map(|_| {
                            if rng.random_bool(p) {
                                rng.random_range(1..=255)
                            } else {
                                0
                            }
                        })
                        .collect();
                    let (mut a, mut b) = (vec![0; n], vec![0; n]);
                    // SAFETY: the CPU has AVX2, checked above.
                    let k = unsafe { super::avx2::drawn_rows(&counts, &mut a) };
                    assert_eq!(k, super::drawn_rows_from(&counts, &mut b, 0, 0));
                    let expected: Vec<u32> =
                        (0..n as u32).filter(|&i| counts[i as usize] > 0).collect();
                    assert_eq!(
                        (&a[..k], &b[..k]),
                        (&expected[..], &expected[..]),
                        "{n}, p {p}"
                    );
                }
            }
        }
    }

    /// The AVX2 drawn records are the scalar loop's, with counts above the weight cap.
    #[test]
    fn avx2_drawn_records_match_the_scalar_loop() {
        if !super::testing::avx2_or_skip("avx2_drawn_records_match_the_scalar_loop") {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let mut rng = ChaCha8Rng::seed_from_u64(25);
            for n in lengths() {
                for p in [0.0, 0.05, 0.63, 1.0] {
                    let counts: Vec<u8> = (0..n)
                        .map(|_| {
                            if rng.random_bool(p) {
                                rng.random_range(1..=255)
                            } else {
                                0
                            }
                        })
                        .collect();
                    let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..2)).collect();
                    let bins: Vec<u64> = (0..n).map(|_| rng.random::<u64>() >> 8).collect();
                    let (mut a, mut b) = (vec![0; n], vec![0; n]);
                    // SAFETY: the CPU has AVX2, checked above.
                    let k = unsafe { super::avx2::drawn_records(&counts, &y, &bins, &mut a) };
                    assert_eq!(
                        k,
                        super::drawn_records_from(&counts, &y, &bins, &mut b, 0, 0)
                    );
                    let expected: Vec<u64> = (0..n)
                        .filter(|&i| counts[i] > 0)
                        .map(|i| {
                            bins[i] | u64::from(counts[i].min(127)) << 57 | u64::from(y[i]) << 56
                        })
                        .collect();
                    assert_eq!(
                        (&a[..k], &b[..k]),
                        (&expected[..], &expected[..]),
                        "{n}, p {p}"
                    );
                }
            }
        }
    }
}
