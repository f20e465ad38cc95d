#!/usr/bin/env bash
# Installs the Debian packages shield needs to build, run and test (Debian 12). Idempotent.
set -euo pipefail
packages=(
  libnftnl-dev libmnl-dev pkg-config   # build: nftnl/mnl bindings
  nftables                             # tests: `nft` as an independent oracle
  iproute2 util-linux procps           # tests and demo: ip, unshare, nsenter, setpriv
  python3                              # demo and tests: listeners in the peer namespace
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
