#!/usr/bin/env bash
# Attach-latency benchmark (docs/benchmarks.md): wall time of `shield-hook createRuntime` (through
# shieldd, ruleset applied and verified) against `nsenter --net=/proc/PID/ns/net nft -f RULESET`
# of the same rendered ruleset, each into fresh network namespaces, interleaved in one run.
# Release build; needs root. Arguments go to attach-bench:
#   bench/attach.sh [--count 200] [--warmup 10] [--profiles dev-standard:bench] [--rootless]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/attach.sh: run as root: it makes network namespaces" >&2
  exit 1
fi
cargo build --release --workspace --bins --quiet
# The hook and the CLI as users should install them: static (see the script).
SHIELD_CLIENT_BIN_DIR=$(scripts/build-static-clients.sh)
export SHIELD_CLIENT_BIN_DIR
target=${CARGO_TARGET_DIR:-$PWD/target}
exec "$target/release/attach-bench" "$@"
