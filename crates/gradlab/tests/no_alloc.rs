//! A step allocates nothing: counted with a global allocator.

mod common;

use common::*;
use gradlab::optim::{self, Layout, Options};
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the count beside it
// allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_step_allocations(layout: &Layout, spec: &str, options: &Options) -> usize {
    let options = options.clone();
    let mut opt = optim::build::<f32>(spec, layout.clone(), &[], options).unwrap();
    let mut rng = Rng(1);
    let mut p: Vec<f32> = rng.vec(layout.total()).iter().map(|&x| x as f32).collect();
    let g: Vec<f32> = rng.vec(layout.total()).iter().map(|&x| x as f32).collect();
    let mut params = split(layout, &mut p);
    let grads = split_ref(layout, &g);
    // Warm-up: the thread pool starts on first use.
    opt.step(&mut params, &grads).unwrap();
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        opt.step(&mut params, &grads).unwrap();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn steps_do_not_allocate() {
    let small = small_layout();
    let large = Layout::new((0..40).map(|i| (format!("t{i}"), vec![5_000 + i]))).unwrap();
    let clipped = Options {
        clip_norm: Some(1.0),
        ..Options::default()
    };
    let compact = [
        "adam(lr=0.01, state_dtype=bf16)",
        "lamb(lr=0.01, state_dtype=bf16)",
    ];
    // Default options check the gradients inside the update; clipping checks them first.
    for options in [Options::default(), clipped] {
        // Muon's products run on the gemm crate, which allocates its packing buffers.
        for spec in SPECS
            .iter()
            .filter(|s| !s.starts_with("muon"))
            .chain(&compact)
        {
            assert_eq!(
                count_step_allocations(&small, spec, &options),
                0,
                "{spec} (small, on the calling thread, {options:?})"
            );
            assert_eq!(
                count_step_allocations(&large, spec, &options),
                0,
                "{spec} (large, on the thread pool, {options:?})"
            );
        }
    }
}
