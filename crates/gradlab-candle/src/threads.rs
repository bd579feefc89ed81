//! How many threads training uses, chosen once at start-up.
//!
//! Three pools can run in a gradlab process: gradlab's kernel pool (the optimizer kernels
//! and [`crate::ops`]' convolutions and large matrix products, `GRADLAB_THREADS`), candle's
//! rayon pool (its own ops, `RAYON_NUM_THREADS`) and candle's spinning barrier pool
//! (`CANDLE_NUM_THREADS`). Each reads its variable when it starts. Left unset, candle
//! re-reads `/proc/cpuinfo` on every matrix product to count cores (about 20 µs each), so
//! [`configure`] writes all three to one count before any pool starts: the count asked for,
//! or else `GRADLAB_THREADS`, `RAYON_NUM_THREADS`, or the available parallelism, in that
//! order. Variables the user has set are otherwise left as they are.
//!
//! It also shortens the barrier pool's spin (`CANDLE_BARRIER_POOL_SPIN_LIMIT`, unless set):
//! after each large element-wise op (every gradient candle accumulates, for one) a worker
//! spins 25,000 pauses by default, about half a millisecond, before it parks, and on a
//! machine where every core already runs one of gradlab's threads that spin takes a core
//! from them. With [`SPIN_LIMIT`] the MLP's training step went from 3.2 to 1.8 ms and the
//! CNN's from 12.3 to 10.0 ms on 2 cores (`gradlab bench --train`).

use crate::{Error, Result};

/// The variables [`configure`] sets, in the order they are consulted.
pub const VARIABLES: [&str; 3] = ["GRADLAB_THREADS", "RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"];

/// The barrier pool's spin before parking, in pauses (candle's default: 25,000).
pub const SPIN_LIMIT: u32 = 500;

/// The largest thread count accepted.
pub const MAX_THREADS: usize = 1024;

/// Chooses the thread count (see the module documentation) and writes it to the variables
/// that are unset, or to all of them when `requested` is given. Call it at the start of
/// `main`, before any thread is spawned and before candle or gradlab run an op. Returns the
/// count; `requested` outside `1..=1024` is an error naming the value.
pub fn configure(requested: Option<usize>) -> Result<usize> {
    let threads = match requested {
        Some(n) if !(1..=MAX_THREADS).contains(&n) => {
            return Err(Error::setting(
                "--threads",
                format!("--threads {n} is out of range: it must be between 1 and {MAX_THREADS}"),
            ))
        }
        Some(n) => n,
        None => from_environment()?
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    for name in VARIABLES {
        if requested.is_some() || std::env::var_os(name).is_none() {
            std::env::set_var(name, threads.to_string());
        }
    }
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", SPIN_LIMIT.to_string());
    }
    Ok(threads)
}

/// The first of [`VARIABLES`] that is set, checked: a set variable that is not a count in
/// range is an error naming it (the pools would silently ignore it).
fn from_environment() -> Result<Option<usize>> {
    for name in VARIABLES {
        let Some(raw) = std::env::var_os(name) else {
            continue;
        };
        let text = raw.to_string_lossy();
        return match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(Some(n)),
            _ => Err(Error::setting(
                name,
                format!(
                    "environment variable {name}={text:?} is not a thread count between 1 and \
                 {MAX_THREADS}"
                ),
            )),
        };
    }
    Ok(None)
}
