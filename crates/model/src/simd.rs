//! Vector kernels for the grower's hottest loops, chosen at run time when the CPU has
//! AVX-512 (each does nothing elsewhere, and the scalar loop does all the work), and a
//! cache prefetch. This is the only unsafe code in the workspace: each unsafe call
//! says why it is sound, and the grower's tests check every kernel against its scalar
//! twin.
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
