#!/usr/bin/env bash
# AddressSanitizer over the unsafe code: the core's fused optimizer engine (plan, engine,
# SIMD kernels, compact bf16 state, the thread pool, sharded state) and, with --candle,
# the candle bridge's in-place optimizer and its GEMM-backed ops.
#
#   scripts/sanitize.sh            # the core (a few minutes on 2 cores)
#   scripts/sanitize.sh --candle   # also the candle bridge (builds candle under ASan: slow)
#
# Needs the nightly toolchain (`rustup toolchain install nightly`). The --target flag keeps
# build scripts and proc macros out of the sanitizer, as rustc requires.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "scripts/sanitize.sh: the nightly toolchain is not installed (rustup toolchain install nightly)" >&2
  exit 2
fi
target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Zsanitizer=address"
export RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
asan=(cargo +nightly test --release --target "$target" --target-dir target/asan)
# The core: unit tests (plan, pool, engine internals) and the engine, bf16-state,
# allocation and sharded-state tests.
"${asan[@]}" -p gradlab --lib
"${asan[@]}" -p gradlab --test optim_engine --test optim_state --test compact_state --test no_alloc --test dist
if [ "${1:-}" = "--candle" ]; then
  "${asan[@]}" -p gradlab-candle --lib
  "${asan[@]}" -p gradlab-candle --test bridge_no_alloc --test candle_optimizer --test ops_gradients
fi
echo "AddressSanitizer: no errors"
