#!/usr/bin/env bash
# Where a DNS answer's time goes (docs/benchmarks.md, "DNS proxy", "Eighth session"): runs
# dns-bench (no containers, 0 elements unless told) under a kernel trace of the scheduler and of
# every system call, then splits each query into segments (bench/dns_trace.py): the proxy's own
# work, the kernel's insert, the wake-ups and the network stack. Needs root and tracefs.
#   bench/dns-trace.sh [dns-bench arguments, e.g. --count 1500 --sizes 100000]
# The raw trace is kept in $SHIELD_TRACE_OUT (default /tmp/shield-dns-trace.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/dns-trace.sh: run as root: it makes network namespaces and reads kernel traces" >&2
  exit 1
fi
tracing=/sys/kernel/tracing
if [ ! -w "$tracing/tracing_on" ]; then
  echo "bench/dns-trace.sh: $tracing is not mounted or not writable (mount -t tracefs nodev $tracing)" >&2
  exit 1
fi
if ! command -v python3 > /dev/null; then
  echo "bench/dns-trace.sh: the analysis needs python3 (apt-get install -y python3)" >&2
  exit 1
fi
out=${SHIELD_TRACE_OUT:-/tmp/shield-dns-trace.txt}

cargo build --release -p shieldd -p shield-hook -p shieldctl -p shield-tests --bins --quiet
SHIELD_CLIENT_BIN_DIR=$(scripts/build-static-clients.sh)
export SHIELD_CLIENT_BIN_DIR
target=${CARGO_TARGET_DIR:-$PWD/target}

# Leave tracefs as it was found: events off, tracing on or off, the clock and the buffers
# (100 MB per CPU while tracing) back to their sizes.
was_on=$(cat "$tracing/tracing_on")
clock=$(sed 's/.*\[\(.*\)\].*/\1/' "$tracing/trace_clock")
# Unused buffers read "7 (expanded: 1408)": the size to restore is the expanded one.
buffer_kb=$(sed 's/.*expanded: *\([0-9]*\).*/\1/; s/^\([0-9]*\).*/\1/' "$tracing/buffer_size_kb")
stop_tracing() {
  echo 0 > "$tracing/tracing_on"
  echo > "$tracing/set_event"
}
restore() {
  stop_tracing
  echo > "$tracing/trace"
  echo "$clock" > "$tracing/trace_clock"
  echo "$buffer_kb" > "$tracing/buffer_size_kb"
  echo "$was_on" > "$tracing/tracing_on"
}
trap restore EXIT
stop_tracing
echo > "$tracing/trace"
# One clock for both CPUs: segments cross them.
echo mono > "$tracing/trace_clock"
echo 100000 > "$tracing/buffer_size_kb"
for event in sched:sched_waking sched:sched_switch raw_syscalls:sys_enter raw_syscalls:sys_exit; do
  echo "$event" >> "$tracing/set_event"
done
echo 1 > "$tracing/tracing_on"
"$target/release/dns-bench" --containers 0 --sizes 0 --count 1500 "$@"
stop_tracing
cat "$tracing/trace" > "$out"
echo
python3 bench/dns_trace.py "$out"
