//! Adam's plain update (no clipping, no L2 decay, no AMSGrad) over f32 parameters with bf16
//! moments, written with AVX-512 (F and BW) intrinsics: the same IEEE operations in the same
//! order as [`super::adam`]'s generic loop, and the same stochastic rounding as
//! [`super::bf16::Bf16Slot`], so the results are equal bit for bit (checked by the pinned
//! fingerprints of `tests/compact_state.rs`). What the generic loop cannot get from the
//! compiler: the rounding bits as one running sum per buffer instead of a multiplication per
//! element and buffer, and 32 values packed to bf16 by one permutation instead of a shift and a
//! narrowing store per 16. Like the generic loop it requests the cache lines it will need
//! [`AHEAD`] elements on ([`super::prefetch`]).

#[cfg(target_arch = "x86_64")]
use super::prefetch::{self, AHEAD, GRADIENTS_AHEAD};
use super::rule::Betas;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The constants of one chunk's plain Adam step (as `adam_loop` derives them).
#[derive(Clone, Copy)]
pub(super) struct PlainAdam {
    /// Decoupled decay factor `1 − γλ` (1 without).
    pub decay: f32,
    /// β₁, β₂ and their complements.
    pub betas: Betas<f32>,
    /// `√(1 − β₂ᵗ)`.
    pub bc2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// `−γ / (1 − β₁ᵗ)`.
    pub neg_step: f32,
    /// PyTorch's lerp form: `m + (1 − β₁)(d − m)` when `1 − β₁ < ½`, else `d − (d − m)β₁`.
    pub small_weight: bool,
}

/// Whether this processor runs [`step`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static YES: OnceLock<bool> = OnceLock::new();
        *YES.get_or_init(|| {
            std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Elements per iteration.
pub(super) const BLOCK: usize = 32;

/// Updates the first `p.len() / BLOCK * BLOCK` elements; returns how many it updated.
/// `m_base` and `v_base` are the buffers' rounding bases ([`super::bf16::Bf16Slot`]).
///
/// # Safety
/// [`available`] is true; `g`, `m` and `v` are at least as long as `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn step(
    k: &PlainAdam,
    p: &mut [f32],
    g: &[f32],
    m: &mut [u16],
    m_base: u32,
    v: &mut [u16],
    v_base: u32,
) -> usize {
    use super::bf16::ALPHA;
    let n = p.len() / BLOCK * BLOCK;
    assert!(g.len() >= n && m.len() >= n && v.len() >= n);
    let decay = _mm512_set1_ps(k.decay);
    let (b1, w1) = (_mm512_set1_ps(k.betas.b1), _mm512_set1_ps(k.betas.w1));
    let (b2, w2) = (_mm512_set1_ps(k.betas.b2), _mm512_set1_ps(k.betas.w2));
    let (bc2, eps, neg) = (
        _mm512_set1_ps(k.bc2_sqrt),
        _mm512_set1_ps(k.eps),
        _mm512_set1_ps(k.neg_step),
    );
    // Lane l of half h holds element 16h + l's rounding bits: base + i·α.
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(ALPHA as i32),
    );
    let half = _mm512_set1_epi32(ALPHA.wrapping_mul(16) as i32);
    let mut rm = _mm512_add_epi32(lanes, _mm512_set1_epi32(m_base as i32));
    let mut rv = _mm512_add_epi32(lanes, _mm512_set1_epi32(v_base as i32));
    let quiet = _mm512_set1_epi32(0x0040_0000);
    // Words 1, 3, 5, … of the first vector, then of the second: the high halves.
    let high_halves = _mm512_setr_epi32(
        0x0003_0001,
        0x0007_0005,
        0x000B_0009,
        0x000F_000D,
        0x0013_0011,
        0x0017_0015,
        0x001B_0019,
        0x001F_001D,
        0x0023_0021,
        0x0027_0025,
        0x002B_0029,
        0x002F_002D,
        0x0033_0031,
        0x0037_0035,
        0x003B_0039,
        0x003F_003D,
    );
    let mut i = 0;
    while i < n {
        // The lines AHEAD elements on, the gradients' GRADIENTS_AHEAD on (see there).
        let at = i + AHEAD;
        prefetch::line(p.as_ptr(), at);
        prefetch::line(p.as_ptr(), at + 16);
        prefetch::line(m.as_ptr(), at);
        prefetch::line(v.as_ptr(), at);
        prefetch::line(g.as_ptr(), i + GRADIENTS_AHEAD);
        prefetch::line(g.as_ptr(), i + GRADIENTS_AHEAD + 16);
        let mut m_out = [_mm512_setzero_si512(); 2];
        let mut v_out = [_mm512_setzero_si512(); 2];
        for h in 0..2 {
            let at = i + 16 * h;
            // SAFETY: at + 16 ≤ n, within every slice (asserted above).
            let (pp, gg, mm, vv) = unsafe {
                (
                    _mm512_loadu_ps(p.as_ptr().add(at)),
                    _mm512_loadu_ps(g.as_ptr().add(at)),
                    _mm256_loadu_si256(m.as_ptr().add(at) as *const __m256i),
                    _mm256_loadu_si256(v.as_ptr().add(at) as *const __m256i),
                )
            };
            let mm = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(mm)));
            let vv = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(vv)));
            let theta = _mm512_mul_ps(pp, decay);
            let d = gg;
            let m_new = if k.small_weight {
                _mm512_add_ps(mm, _mm512_mul_ps(w1, _mm512_sub_ps(d, mm)))
            } else {
                _mm512_sub_ps(d, _mm512_mul_ps(_mm512_sub_ps(d, mm), b1))
            };
            let v_new = _mm512_add_ps(
                _mm512_mul_ps(vv, b2),
                _mm512_mul_ps(_mm512_mul_ps(w2, d), d),
            );
            let denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v_new), bc2), eps);
            let p_new = _mm512_add_ps(theta, _mm512_div_ps(_mm512_mul_ps(neg, m_new), denom));
            // SAFETY: as for the loads.
            unsafe { _mm512_storeu_ps(p.as_mut_ptr().add(at), p_new) };
            m_out[h] = round(m_new, rm, quiet);
            v_out[h] = round(v_new, rv, quiet);
            rm = _mm512_add_epi32(rm, half);
            rv = _mm512_add_epi32(rv, half);
        }
        let m_bits = _mm512_permutex2var_epi16(m_out[0], high_halves, m_out[1]);
        let v_bits = _mm512_permutex2var_epi16(v_out[0], high_halves, v_out[1]);
        // SAFETY: i + 32 ≤ n.
        unsafe {
            _mm512_storeu_si512(m.as_mut_ptr().add(i) as *mut __m512i, m_bits);
            _mm512_storeu_si512(v.as_mut_ptr().add(i) as *mut __m512i, v_bits);
        }
        i += BLOCK;
    }
    n
}

/// The f32 bits of `x` with the random bits `r >> 16` added (NaN: the quiet bit set instead),
/// whose high halves are the stochastically rounded bf16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn round(x: __m512, r: __m512i, quiet: __m512i) -> __m512i {
    let bits = _mm512_castps_si512(x);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let added = _mm512_add_epi32(bits, _mm512_srli_epi32::<16>(r));
    _mm512_mask_or_epi32(added, nan, bits, quiet)
}
