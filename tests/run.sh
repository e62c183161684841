#!/usr/bin/env bash
# Runs the whole kubox test suite: formatting, lints, unit tests and the black-box tests of
# the real binary with real clients. Installs what it needs when missing (needs root for apt).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v gcc >/dev/null || need_apt+=(build-essential)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# The node tests run real containerd and runc, the kubox CNI plugin (netlink, nftables) and
# busybox images, inside network namespaces they create.
command -v containerd >/dev/null || need_apt+=(containerd)
command -v runc >/dev/null || need_apt+=(runc)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
[[ -x /bin/busybox ]] || need_apt+=(busybox-static)
command -v nsenter >/dev/null || need_apt+=(util-linux)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
if ((${#need_apt[@]})); then
  echo "tests/run.sh: installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import kubernetes' 2>/dev/null; then
  echo "tests/run.sh: installing the Python kubernetes client"
  python3 -m pip install -q kubernetes 2>&1 | grep -v -e "^WARNING: Running pip as" -e "dependency conflicts" -e "requires" || true
fi
# helm v4 for the helm black-box test: the one on PATH, or a static build fetched once into
# the user's cache (tests/fetch-helm.py).
if [[ -z "${KUBOX_TEST_HELM:-}" ]]; then
  if command -v helm >/dev/null; then
    KUBOX_TEST_HELM="$(command -v helm)"
  else
    KUBOX_TEST_HELM="${XDG_CACHE_HOME:-$HOME/.cache}/kubox-test-tools/helm"
    [[ -x "$KUBOX_TEST_HELM" ]] || python3 tests/fetch-helm.py "$KUBOX_TEST_HELM"
  fi
fi
export KUBOX_TEST_HELM
kubectl_dir="$(dirname "$(readlink -f "$(command -v kubectl)")")" || {
  echo "tests/run.sh: kubectl is not on PATH; the black-box tests need kubectl 1.27 and 1.33" >&2; exit 1; }
for v in 1.27 1.33; do
  [[ -x "$kubectl_dir/kubectl.$v" ]] || { echo "tests/run.sh: $kubectl_dir/kubectl.$v is missing" >&2; exit 1; }
done
export KUBOX_TEST_KUBECTL_DIR="$kubectl_dir"

phase() { echo "tests/run.sh: $1 (${SECONDS}s so far)"; }

phase "formatting"
cargo fmt --all -- --check

# Lints and tests in ONE compilation: clippy-driver compiles the workspace's own crates (lints
# plus code, every target the tests build), plain rustc the dependencies, the same split that
# `cargo clippy` makes. A separate `cargo clippy` pass would check every dependency a second
# time, which costs CI about as much as the test build itself. -D warnings turns any lint
# (rustc's or clippy's, incl. the workspace's [lints]) into an error; dependencies are capped.
phase "building (clippy -D warnings on workspace crates)"
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
cargo test --workspace --locked --no-run

phase "running tests"
cargo test --workspace --locked -- --test-threads="${KUBOX_TEST_THREADS:-2}"
phase "done"
