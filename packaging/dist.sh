#!/usr/bin/env bash
# Builds the release artifacts of this checkout for the build host's architecture (or, with
# CARGO_BUILD_TARGET set, e.g. aarch64-unknown-linux-gnu with ARCH=arm64, for that target):
#   dist/kubox-<arch>                  the binary (`dist` profile: opt-z, fat LTO, stripped)
#   dist/sha256sum-<arch>.txt          its checksum, as install.sh verifies it
#   dist/install.sh                    the installer, published next to them
#   dist/kubox-airgap-<arch>.tar.gz    kubox-airgap-<arch>/ holding the binary and its
#                                      checksum, install.sh, the systemd units, bin/ with this
#                                      host's containerd, containerd-shim-runc-v2 and runc in a
#                                      native build (KUBOX_DIST_NO_CONTAINERD=true leaves them
#                                      out), and an empty images/ where users put image archives
#                                      (OCI layout or `docker save` tars, maybe gzip/zstd) that
#                                      install.sh copies to /var/lib/kubox/agent/images/
# Takes 15 minutes or more. Publish dist/ as a release (install.sh's default download URL is
# https://github.com/kubox-dev/kubox/releases/download/<version>) or anywhere else and point
# INSTALL_KUBOX_DOWNLOAD_URL at it.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${ARCH:-$(uname -m)}" in
amd64 | x86_64) arch=amd64 ;;
arm64 | aarch64) arch=arm64 ;;
arm*) arch=arm ;;
*)
  echo "dist.sh: kubox has no release architecture for ${ARCH:-$(uname -m)}" >&2
  exit 1
  ;;
esac

cargo build --profile dist --locked --bin kubox
bin=target/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}dist/kubox

mkdir -p dist
cp "$bin" "dist/kubox-$arch"
(cd dist && sha256sum "kubox-$arch" >"sha256sum-$arch.txt")
cp install.sh dist/

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
air="$stage/kubox-airgap-$arch"
mkdir -p "$air/bin" "$air/images"
cp "dist/kubox-$arch" "dist/sha256sum-$arch.txt" "$air/"
cp install.sh packaging/kubox.service packaging/kubox-agent.service "$air/"
# The build host's own containerd and runc fit only a native build.
if [[ ${KUBOX_DIST_NO_CONTAINERD:-} != true && -z ${CARGO_BUILD_TARGET:-} ]]; then
  for cmd in containerd containerd-shim-runc-v2 runc; do
    if p=$(command -v "$cmd"); then cp "$p" "$air/bin/"; fi
  done
fi
tar -C "$stage" -czf "dist/kubox-airgap-$arch.tar.gz" "kubox-airgap-$arch"
ls -l dist/
