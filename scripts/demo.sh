#!/usr/bin/env bash
# Builds shield, starts shieldd, and shields a demo container: a process in its own network
# namespace, joined by a veth pair to a "peer" namespace that listens on two addresses.
# The demo profile allowlists one of them: one connection is allowed, the other is refused.
# Needs root (it creates network namespaces). Everything it makes is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "demo: run as root (sudo $0): it creates network namespaces" >&2
  exit 1
fi
scripts/install-deps.sh
cargo build --release --bins --quiet
bin=$PWD/target/release

work=$(mktemp -d /tmp/shield-demo.XXXXXX)
peer=shield-demo-peer-$$
daemon_pid='' container_pid='' listener_pid=''
cleanup() {
  [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null
  [ -n "$container_pid" ] && kill "$container_pid" 2>/dev/null
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  ip netns del "$peer" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

export XDG_RUNTIME_DIR=$work/run XDG_CONFIG_HOME=$work/config XDG_STATE_HOME=$work/state
mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME/shield/profiles"
socket=$work/run/shieldd.sock
echo "10.201.0.2    # the one peer this container may reach" >"$XDG_CONFIG_HOME/shield/profiles/demo.txt"

echo "== starting shieldd"
"$bin/shieldd" --socket "$socket" 2>"$work/shieldd.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done

echo "== making the demo container (a network namespace) and its peer 10.201.0.2 / 10.201.0.3"
ip netns add "$peer"
unshare --net sleep 600 &
container_pid=$!
sleep 0.1
ip link add shd-c type veth peer name shd-p netns "$peer"
ip link set shd-c netns "$container_pid"
in_container() { nsenter --net="/proc/$container_pid/ns/net" "$@"; }
in_container ip link set lo up
in_container ip addr add 10.201.0.1/24 dev shd-c
in_container ip link set shd-c up
ip -n "$peer" addr add 10.201.0.2/24 dev shd-p
ip -n "$peer" addr add 10.201.0.3/24 dev shd-p
ip -n "$peer" link set shd-p up
ip netns exec "$peer" python3 -m http.server --bind 0.0.0.0 8080 >/dev/null 2>&1 &
listener_pid=$!
sleep 0.5

echo "== shield-hook createRuntime (as the OCI runtime would call it)"
printf '{"ociVersion":"1.0.2","id":"demo%060d","pid":%d,"bundle":"/","status":"created","annotations":{"shield.profiles":"demo","shield.name":"demo"}}' \
  0 "$container_pid" | "$bin/shield-hook" createRuntime --socket "$socket"
echo "hook exit status: 0 (ruleset applied and verified)"

connect() {
  local started ended
  started=$(date +%s%N)
  if in_container timeout 5 bash -c "echo >/dev/tcp/$1/8080" 2>/dev/null; then result=connected; else result=refused; fi
  ended=$(date +%s%N)
  printf '   %-12s -> %s in %d ms\n' "$1:8080" "$result" $(((ended - started) / 1000000))
}
echo "== connections from inside the container"
connect 10.201.0.2
connect 10.201.0.3

echo "== shieldctl ps"
"$bin/shieldctl" --socket "$socket" ps
echo "== shieldctl rules demo (read back from the kernel)"
"$bin/shieldctl" --socket "$socket" rules demo
