#!/usr/bin/env bash
# Prepares this machine (Debian 12, podman 4.3.1, run as root) for the rootless podman end-to-end
# tests (tests/tests/podman.rs): packages, the kernel/cgroup/device fixes rootless podman needs
# here, a podman environment for the test user, and a local image built from busybox-static
# (there is no image registry). Idempotent: run it again and nothing changes.
#
# Every fix below is one listed in /work/shared/notes/machine.md ("Podman 4.3.1").
#
# The test user's podman lives in PODMAN_HOME (the user's own HOME is /nonexistent):
#   PODMAN_HOME/storage.conf   overlay storage in PODMAN_HOME/storage (the tests pass it as
#                              CONTAINERS_STORAGE_CONF, because they point XDG_CONFIG_HOME and
#                              XDG_DATA_HOME at temporary directories)
#   PODMAN_HOME/storage        the image store (graphroot), holding localhost/shieldtest:latest
set -euo pipefail

TEST_USER=${SHIELD_TEST_USER:-shieldtest}
PODMAN_HOME=${SHIELD_PODMAN_HOME:-/var/lib/shieldtest-podman}
IMAGE=localhost/shieldtest:latest

if [ "$(id -u)" != 0 ]; then
  echo "prepare-machine.sh: run as root" >&2
  exit 1
fi

# --- packages ---------------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
packages=(podman crun uidmap slirp4netns catatonit golang-github-containers-common
  busybox-static nftables iproute2 dnsmasq-base bind9-dnsutils util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# passt is optional (podman 4.3.1 has no pasta network mode; slirp4netns is used).
if ! dpkg-query -W -f='${Status}' passt 2>/dev/null | grep -q 'install ok installed'; then
  apt-get install -y -qq passt >/dev/null 2>&1 || echo "prepare-machine.sh: passt not installed (optional)"
fi

# --- test user --------------------------------------------------------------------------------
if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$TEST_USER"
fi
uid=$(id -u "$TEST_USER")
gid=$(id -g "$TEST_USER")

# --- cgroups: crun refuses the hybrid layout while a v2 controller has no v1 hierarchy ----------
if [ -r /sys/fs/cgroup/unified/cgroup.controllers ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    if ! awk -v c="$c" '$3 == "cgroup" && ("," $4 ",") ~ ("," c ",") { found = 1 } END { exit !found }' /proc/mounts; then
      mkdir -p "/sys/fs/cgroup/$c"
      mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    fi
  done
fi

# --- slirp4netns opens /dev/net/tun as the user -----------------------------------------------
if [ -e /dev/net/tun ]; then
  chmod 0666 /dev/net/tun
fi

# --- subordinate ids --------------------------------------------------------------------------
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^${TEST_USER}:" "$f"; then
    # Above every range already given out.
    start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$f")
    echo "${TEST_USER}:${start}:65536" >>"$f"
  fi
done

# --- runtime directory ------------------------------------------------------------------------
install -d -m 0700 -o "$uid" -g "$gid" "/run/user/$uid"

# --- system containers.conf: no systemd, no journald on this machine ---------------------------
# Root also lacks CAP_SYS_RESOURCE, so rootful podman needs explicit ulimits.
mkdir -p /etc/containers
conf=/etc/containers/containers.conf
marker="# Written by shield's tests/podman/prepare-machine.sh"
if [ ! -e "$conf" ] || head -n1 "$conf" | grep -qF "$marker"; then
  cat >"$conf.tmp" <<EOF
$marker
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
EOF
  mv "$conf.tmp" "$conf"
else
  echo "prepare-machine.sh: keeping the existing $conf (not ours)" >&2
fi

# --- the test user's podman environment -------------------------------------------------------
install -d -m 0755 -o "$uid" -g "$gid" "$PODMAN_HOME"
install -d -m 0700 -o "$uid" -g "$gid" "$PODMAN_HOME/storage"
cat >"$PODMAN_HOME/storage.conf.tmp" <<EOF
$marker
[storage]
driver = "overlay"
graphroot = "$PODMAN_HOME/storage"
# What rootless podman actually uses (graphroot is root's; without this key the store would
# follow XDG_DATA_HOME, which the tests point at a temporary directory).
rootless_storage_path = "$PODMAN_HOME/storage"
runroot = "/run/user/$uid/containers"
EOF
chown "$uid:$gid" "$PODMAN_HOME/storage.conf.tmp"
mv "$PODMAN_HOME/storage.conf.tmp" "$PODMAN_HOME/storage.conf"

as_user() {
  runuser -u "$TEST_USER" -- env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$PODMAN_HOME" \
    XDG_RUNTIME_DIR="/run/user/$uid" \
    CONTAINERS_STORAGE_CONF="$PODMAN_HOME/storage.conf" \
    "$@"
}
# Podman keeps the subordinate ids it read at its first run: pick up new ones.
as_user podman system migrate >/dev/null 2>&1 || true

# --- the image: busybox-static with its applets ------------------------------------------------
if ! as_user podman image exists "$IMAGE"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev}
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
  done
  for applet in nslookup nc wget ip sh; do
    [ -e "$rootfs/bin/$applet" ] || {
      echo "prepare-machine.sh: busybox lacks the $applet applet" >&2
      exit 1
    }
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
  chmod -R a+rX "$rootfs"
  tar -C "$rootfs" -c . | as_user podman import --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
fi

# --- smoke test: a rootless container starts and has slirp4netns networking --------------------
out=$(as_user podman run --rm --network slirp4netns "$IMAGE" ip -4 addr show tap0)
if ! grep -q 10.0.2.100 <<<"$out"; then
  echo "prepare-machine.sh: a rootless container has no slirp4netns network:" >&2
  echo "$out" >&2
  exit 1
fi
echo "prepare-machine.sh: rootless podman ready for $TEST_USER (home $PODMAN_HOME, image $IMAGE)"
