//! The persistent thread pool the optimizer kernels run on.
//!
//! A step hands the pool one closure and a number of tasks; the workers and the calling
//! thread claim task indices from an atomic counter until none are left. Nothing is
//! allocated per step (rayon's injector queue allocates a block every few dozen jobs, which
//! is why the kernels use this pool). The work is cut into tasks by the caller, never by
//! the pool, so results do not depend on the thread count.
//!
//! The global pool has `GRADLAB_THREADS` threads (default: the available parallelism);
//! [`Pool::install`] runs a closure with another pool.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

type Task<'a> = &'a (dyn Fn(usize) + Sync);

/// A published job: the task closure with its lifetime erased, and the task count.
#[derive(Clone, Copy)]
struct Job {
    task: *const (dyn Fn(usize) + Sync + 'static),
    count: usize,
}

// SAFETY: the task behind the pointer is `Sync` and outlives the job (`run` waits for every
// worker to finish with it before returning), so handing the pointer to workers is sound.
unsafe impl Send for Job {}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    finished: Condvar,
    next: AtomicUsize,
    panicked: AtomicBool,
}

struct State {
    job: Option<Job>,
    generation: u64,
    busy_workers: usize,
    shutdown: bool,
}

/// A fixed set of worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time: callers from several threads take turns.
    turn: Mutex<()>,
}

thread_local! {
    static CURRENT: Cell<*const Pool> = const { Cell::new(std::ptr::null()) };
}

impl Pool {
    /// A pool running tasks on `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                busy_workers: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("gradlab-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a gradlab worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            turn: Mutex::new(()),
        }
    }

    /// The number of threads that run tasks (workers plus the caller).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` with this pool as the current one on this thread.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|c| c.replace(self as *const Pool));
        struct Restore(*const Pool);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(previous);
        f()
    }

    /// Runs `task(i)` for every `i < count` on the pool's threads and returns when all are
    /// done. Panics if a task panicked.
    pub fn run(&self, count: usize, task: Task<'_>) {
        if self.workers.is_empty() || count <= 1 {
            (0..count).for_each(task);
            return;
        }
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the lifetime is erased only while this call waits for every worker to
        // finish with the job (busy_workers returns to 0 below).
        let erased: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
        self.shared.next.store(0, Ordering::SeqCst);
        self.shared.panicked.store(false, Ordering::SeqCst);
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = Some(Job {
                task: erased,
                count,
            });
            state.generation += 1;
            state.busy_workers = self.workers.len();
            self.shared.wake.notify_all();
        }
        let caller = catch_unwind(AssertUnwindSafe(|| claim(&self.shared, task, count)));
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.busy_workers > 0 {
            state = self
                .shared
                .finished
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.job = None;
        drop(state);
        if caller.is_err() || self.shared.panicked.load(Ordering::SeqCst) {
            panic!("a gradlab kernel task panicked");
        }
    }
}

fn claim(shared: &Shared, task: Task<'_>, count: usize) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            return;
        }
        task(i);
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while state.generation == seen && !state.shutdown {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            seen = state.generation;
            state.job
        };
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until this worker reports back.
            let task: Task<'_> = unsafe { &*job.task };
            if catch_unwind(AssertUnwindSafe(|| claim(shared, task, job.count))).is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.busy_workers -= 1;
        if state.busy_workers == 0 {
            shared.finished.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The global pool.
pub fn global() -> &'static Pool {
    static GLOBAL: OnceLock<Pool> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let threads = std::env::var("GRADLAB_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Pool::new(threads)
    })
}

/// Runs `task(i)` for every `i < count` on the current pool ([`Pool::install`]) or the
/// global one.
pub fn run(count: usize, task: Task<'_>) {
    let current = CURRENT.with(|c| c.get());
    if current.is_null() {
        global().run(count, task)
    } else {
        // SAFETY: `install` keeps the pool alive while it is current.
        unsafe { &*current }.run(count, task)
    }
}

/// The number of threads of the current pool.
pub fn current_threads() -> usize {
    let current = CURRENT.with(|c| c.get());
    if current.is_null() {
        global().threads()
    } else {
        // SAFETY: `install` keeps the pool alive while it is current.
        unsafe { &*current }.threads()
    }
}

/// A raw pointer that tasks on the pool may share (each writes a disjoint part).
struct SharedMut<T>(*mut T);
// SAFETY: only used by `for_each_chunk`, whose tasks write disjoint chunks.
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// Splits `out` into consecutive chunks of `chunk` values and runs `f(index, chunk)` for each
/// on gradlab's pool. The split does not depend on the thread count.
pub fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.is_empty() {
        return;
    }
    let chunk = chunk.max(1);
    let count = out.len().div_ceil(chunk);
    let len = out.len();
    let base = SharedMut(out.as_mut_ptr());
    let base = &base;
    run(count, &|i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: task i alone touches `out[start..start + n]`, inside `out` (start < len),
        // and `out` is borrowed mutably for the whole of `run`, which waits for every task.
        let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), n) };
        f(i, part);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 4] {
            let pool = Pool::new(threads);
            for count in [0, 1, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                pool.run(count, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = Pool::new(3);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(50, &|i| assert!(i != 17))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(10, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }
}
