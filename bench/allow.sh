#!/usr/bin/env bash
# Live-change benchmark (docs/benchmarks.md, "Live changes (allow)"): wall time of one `allow` of
# an IPv4 address through `shieldctl` (spawn to exit) and through the gRPC API (one long-lived
# client), against `nsenter --net=/proc/PID/ns/net nft add element inet shield allow_v4 { IP }`,
# interleaved in one run, on a near-empty allow set and again after a bulk load of 100 000
# addresses through the API. Release build; needs root. Arguments go to allow-bench:
#   bench/allow.sh [--count 500] [--count-big 100] [--big-budget 20] [--warmup 20] [--bulk 100000] [--log info]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/allow.sh: run as root: it makes network namespaces" >&2
  exit 1
fi
cargo build --release -p shieldd -p shield-hook -p shieldctl -p shield-tests --bins --quiet
# The hook and the CLI as users should install them: static (see the script).
SHIELD_CLIENT_BIN_DIR=$(scripts/build-static-clients.sh)
export SHIELD_CLIENT_BIN_DIR
target=${CARGO_TARGET_DIR:-$PWD/target}
exec "$target/release/allow-bench" "$@"
