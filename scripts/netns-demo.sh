#!/usr/bin/env bash
# Data-parallel training across two "hosts" on one machine: two network namespaces joined by
# a veth pair (10.9.0.1 and 10.9.0.2), MPI talking TCP between them, mpirun's remote shell
# replaced by `ip netns exec` (scripts/netns-rsh). Needs root, iproute2, Open MPI, and gradlab
# built with `--features mpi`:
#   cargo build --release -p gradlab-cli --features mpi
#   sudo scripts/netns-demo.sh [OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
gradlab="${GRADLAB:-$root/target/release/gradlab}"
out="${1:-/tmp/gradlab-netns-demo}"
cleanup() {
  ip netns del h1 2>/dev/null || true
  ip netns del h2 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add h1
ip netns add h2
ip link add v1 type veth peer name v2
ip link set v1 netns h1
ip link set v2 netns h2
ip -n h1 addr add 10.9.0.1/24 dev v1
ip -n h2 addr add 10.9.0.2/24 dev v2
for ns in h1 h2; do
  ip -n "$ns" link set lo up
done
ip -n h1 link set v1 up
ip -n h2 link set v2 up
hosts="$(mktemp)"
printf 'h1 slots=1\nh2 slots=1\n' > "$hosts"
rm -rf "$out"
# PMIX_MCA_gds=hash: the two "hosts" share /tmp, so PMIx's shared-memory store must not be used.
ip netns exec h1 env PMIX_MCA_gds=hash OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  mpirun --hostfile "$hosts" -np 2 \
    --mca plm_rsh_agent "$here/netns-rsh" \
    --mca btl tcp,self --mca btl_tcp_if_include 10.9.0.0/24 --mca oob_tcp_if_include 10.9.0.0/24 \
    -x PMIX_MCA_gds=hash -x GRADLAB_THREADS=1 -x RAYON_NUM_THREADS=1 \
    "$gradlab" train --epochs 2 --out "$out" &
job=$!
sleep 3
echo "ranks and their network namespaces:"
for pid in $(pgrep -x gradlab); do
  echo "  pid $pid in $(ip netns identify "$pid")"
done
echo "TCP between the hosts:"
ip netns exec h2 ss -tnp | grep gradlab | grep 10.9.0 || true
wait "$job"
rm -f "$hosts"
