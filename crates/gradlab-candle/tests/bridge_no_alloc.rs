//! A step of the candle bridge copies no parameter and allocates nothing of its own. candle's
//! in-place op checks the destination layout for overlap with a small vector each call
//! (`Layout::has_internal_overlap` in candle-core 0.11), so one tiny allocation per tensor
//! update remains, outside gradlab.

use candle_core::{Device, Tensor, Var};
use gradlab_candle::{GradlabOptimizer, OptimizerConfig};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

// SAFETY: every call is forwarded unchanged to the system allocator; the count beside it
// allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::SeqCst) {
            COUNT.fetch_add(1, Ordering::SeqCst);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_bridge_step_allocates_nothing_of_its_own() {
    let d = Device::Cpu;
    let named: Vec<(String, Var)> = (0..5)
        .map(|i| {
            (
                format!("t{i}"),
                Var::from_tensor(&Tensor::ones((40, 30 + i), candle_core::DType::F32, &d).unwrap())
                    .unwrap(),
            )
        })
        .collect();
    let loss = named
        .iter()
        .map(|(_, v)| v.as_tensor().sqr().unwrap().sum_all().unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    for spec in [
        "adamw(lr=0.01)",
        "lamb(lr=0.01)",
        "sgd(lr=0.1, momentum=0.9)",
        "lookahead(adam, k=2)",
    ] {
        let mut opt =
            GradlabOptimizer::with_names(named.clone(), &OptimizerConfig::new(spec)).unwrap();
        opt.step_grads(&grads).unwrap();
        COUNT.store(0, Ordering::SeqCst);
        ON.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            opt.step_grads(&grads).unwrap();
        }
        ON.store(false, Ordering::SeqCst);
        // At most candle's one layout check per tensor update (Lookahead updates every
        // tensor a second time when it synchronises).
        let tensor_updates = 3 * 5 * if spec.starts_with("lookahead") { 2 } else { 1 };
        let count = COUNT.load(Ordering::SeqCst);
        assert!(
            count <= tensor_updates,
            "{spec}: {count} allocations in 3 steps"
        );
    }
}
