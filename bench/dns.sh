#!/usr/bin/env bash
# DNS proxy benchmark (docs/benchmarks.md, "DNS proxy"): latency a shield container's DNS proxy
# adds to an answer (cache miss and cache hit, every answer inserting into dns_v4) against the
# same upstream queried directly, side by side with the reference mechanism (dnsmasq --nftset
# into an equivalent set in an equivalent namespace), with 0, 10 000 and 100 000 elements in the
# dns sets; then answers per second across 10 containers and the daemon's CPU per 1 000 answers.
# Release build; needs root and dnsmasq. Arguments go to dns-bench:
#   bench/dns.sh [--count 2000] [--warmup 50] [--budget 30] [--sizes 0,10000,100000]
#                [--containers 10] [--window 4] [--secs 10] [--cache-size 1024] [--log info]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/dns.sh: run as root: it makes network namespaces" >&2
  exit 1
fi
cargo build --release -p shieldd -p shield-hook -p shieldctl -p shield-tests --bins --quiet
# The hook and the CLI as users should install them: static (see the script).
SHIELD_CLIENT_BIN_DIR=$(scripts/build-static-clients.sh)
export SHIELD_CLIENT_BIN_DIR
target=${CARGO_TARGET_DIR:-$PWD/target}
exec "$target/release/dns-bench" "$@"
