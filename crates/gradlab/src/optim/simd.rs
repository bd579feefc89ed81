//! Runs a kernel compiled for the widest vector instructions the processor has.
//!
//! The kernels are plain branch-free loops; on x86-64 they are also compiled with AVX2+FMA
//! and with AVX-512F enabled, and the widest the processor has is chosen at run time. The
//! arithmetic is the same IEEE operations either way (Rust never fuses a multiply and an add
//! on its own), so the results are bitwise the same on every processor.

/// The widest instruction set available: 0 baseline, 1 AVX2+FMA, 2 AVX-512F; checked once.
#[cfg(target_arch = "x86_64")]
fn width() -> u8 {
    use std::sync::OnceLock;
    static WIDTH: OnceLock<u8> = OnceLock::new();
    *WIDTH.get_or_init(|| {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2 && std::is_x86_feature_detected!("avx512f") {
            2
        } else {
            u8::from(avx2)
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f`, compiled for AVX-512 or AVX2 where the processor has them (`f` must be
/// inlinable: a closure or an `#[inline(always)]` function).
#[inline(always)]
pub(crate) fn wide_call<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match width() {
        // SAFETY: the processor supports these instructions (checked in `width`).
        2 => return unsafe { avx512(f) },
        // SAFETY: as above, for AVX2 and FMA.
        1 => return unsafe { avx2(f) },
        _ => {}
    }
    f()
}
