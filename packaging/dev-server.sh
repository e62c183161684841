#!/usr/bin/env bash
# Builds kubox from this checkout and starts `kubox server` (control plane with the embedded
# SQLite datastore, plus the node agent with containerd). Installs what is missing first:
# protoc to build; containerd, runc, nftables and iproute2 to run pods (Debian/Ubuntu apt).
# Needs root to run the server (it writes /var/lib/kubox, /etc/kubox and programs the node's
# network). Extra arguments go to `kubox server`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v cc >/dev/null || need+=(build-essential)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  echo "dev-server.sh: installing ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "dev-server.sh: cargo is missing; install Rust from https://rustup.rs and run this again" >&2
  exit 1
}
cargo build --release --locked
exec_as_root() { if [[ $(id -u) -eq 0 ]]; then exec "$@"; else exec sudo "$@"; fi; }
exec_as_root target/release/kubox server "$@"
