//! Threads on which candle keeps the graph of a gradient, so that it can be differentiated
//! again (double backward): candle reads `CANDLE_GRAD_DO_NOT_DETACH` once per thread.

use candle_core::Var;

/// Runs `f` on a thread where candle keeps gradient graphs (double backward works).
///
/// candle latches `CANDLE_GRAD_DO_NOT_DETACH` per thread at the thread's first backward
/// pass, so the variable is set only until the new thread has latched it (by a tiny
/// backward pass of its own), under a lock: concurrent callers cannot remove it from under
/// each other's threads (which silently detached their gradients).
pub fn second_order<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    with_second_order(f)
}

/// [`second_order`] for work that borrows (a scoped thread): build and use a
/// [`NetworkHessian`](super::NetworkHessian) of any model inside `f`.
///
/// ```
/// use candle_core::{Device, Var};
/// use gradlab_candle::hessian::{with_second_order, HvpMethod, NetworkHessian};
/// let w = Var::new(&[1.0f64, 2.0], &Device::Cpu)?;
/// // loss = w0² + 3·w1², whose Hessian is diag(2, 6).
/// let scale = candle_core::Tensor::new(&[1.0f64, 3.0], &Device::Cpu)?;
/// let top = with_second_order(|| -> gradlab_candle::Result<f64> {
///     let loss = || Ok((w.as_tensor().sqr()? * &scale)?.sum_all()?);
///     let mut h = NetworkHessian::of_loss(vec![("w".into(), w.clone())], loss)?;
///     assert_eq!(h.method(), HvpMethod::DoubleBackward);
///     let mut hv = [0.0; 2];
///     gradlab::landscape::HessianOperator::hvp(&mut h, &[0.0, 1.0], &mut hv)?;
///     Ok(hv[1])
/// })?;
/// assert!((top - 6.0).abs() < 1e-12);
/// # Ok::<(), gradlab_candle::Error>(())
/// ```
pub fn with_second_order<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    std::thread::scope(|scope| {
        let guard = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH");
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let (latched, wait) = std::sync::mpsc::channel();
        let handle = scope.spawn(move || {
            latch_second_order();
            let _ = latched.send(());
            f()
        });
        let _ = wait.recv();
        match previous {
            Some(v) => std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", v),
            None => std::env::remove_var("CANDLE_GRAD_DO_NOT_DETACH"),
        }
        drop(guard);
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Makes this thread read `CANDLE_GRAD_DO_NOT_DETACH` now: candle at its first backward
/// pass, gradlab's ops at their first question.
fn latch_second_order() {
    crate::ops::second_order_enabled();
    if let Ok(v) = Var::new(1f64, &candle_core::Device::Cpu) {
        let _ = v.as_tensor().sqr().and_then(|t| t.backward());
    }
}
