#!/usr/bin/env bash
# podman run overhead benchmark (docs/benchmarks.md): wall time of rootless
# `podman run --rm IMAGE true` with shield (the arguments of `shieldctl prepare NAME --json`, the
# hooks attaching through shieldd) against the same run without the annotation, alternating.
# Release build; needs root and a machine prepared by tests/podman/prepare-machine.sh.
# Arguments go to podman-bench:
#   bench/podman.sh [--count 30] [--warmup 3] [--profiles dev-standard]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "bench/podman.sh: run as root: it runs podman as the test user" >&2
  exit 1
fi
cargo build --release --workspace --bins --quiet
# The hook and the CLI as users should install them: static (see the script).
SHIELD_CLIENT_BIN_DIR=$(scripts/build-static-clients.sh)
export SHIELD_CLIENT_BIN_DIR
target=${CARGO_TARGET_DIR:-$PWD/target}
exec "$target/release/podman-bench" "$@"
