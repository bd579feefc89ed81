//! Runs a kernel compiled for the widest vector instructions the processor has.
//!
//! The kernels are plain branch-free loops; on x86-64 they are compiled a second time with
//! AVX2 and FMA enabled and chosen at run time. The arithmetic is the same IEEE operations
//! either way (Rust never fuses a multiply and an add on its own), so the results are
//! bitwise the same on every processor.

/// Whether AVX2 (and FMA) can be used, checked once.
#[cfg(target_arch = "x86_64")]
fn wide() -> bool {
    use std::sync::OnceLock;
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f`, compiled for AVX2 where the processor has it (`f` must be inlinable: a closure
/// or an `#[inline(always)]` function).
#[inline(always)]
pub fn wide_call<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: the processor supports AVX2 and FMA (checked above).
        return unsafe { avx2(f) };
    }
    f()
}
