#!/usr/bin/env bash
# Installs what the tests and the demo need, and only what is missing:
# Debian packages, the wasm target, the control plane binaries and the
# cluster's node components (built from Go modules by
# tests/control-plane/build.sh and tests/cluster/build.sh into a cache outside
# the repo), and the real io-engine (built from pinned sources by
# tests/io-engine/build.sh into the same cache).
#
#   setup.sh [--no-cluster] [--no-io-engine]
#
# --no-cluster leaves out the single-node cluster's packages and node
# components, --no-io-engine the io-engine's build packages and build
# (MSP_SKIP_IO_ENGINE=1 does the same): what tests/demo.sh does not use. The
# tests needing them then fail under CI=true or say SKIPPED otherwise.
# Safe to run again: a second run does nothing. Prints the directory holding
# the control plane binaries (KUBEBUILDER_ASSETS when set, without a build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=1 io_engine=1
[ "${MSP_SKIP_IO_ENGINE:-}" != 1 ] || io_engine=0
for arg in "$@"; do
  case $arg in
    --no-cluster) cluster=0 ;;
    --no-io-engine) io_engine=0 ;;
    *) echo "usage: $0 [--no-cluster] [--no-io-engine]" >&2; exit 2 ;;
  esac
done

log() { printf 'setup: %s\n' "$*" >&2; }
# Runs a step and logs how long it took (the cold build times of a fresh machine).
timed() {
  local name=$1 t0=$SECONDS status=0
  shift
  "$@" || status=$?
  log "$name: $(( SECONDS - t0 ))s"
  return $status
}

# protoc and the well-known types for proto/; the disk tools the storage node
# tests use to put foreign signatures on loop devices.
packages=(protobuf-compiler libprotobuf-dev e2fsprogs lvm2 gdisk fdisk util-linux)
# The io-engine: udev (its disk detection, run by the tests) and what SPDK,
# DPDK, ISA-L and the io-engine crates need to build.
[ $io_engine = 0 ] || packages+=(udev build-essential libaio-dev libssl-dev uuid-dev libnuma-dev
  nasm autoconf automake libtool meson ninja-build python3-pyelftools liburing-dev libbsd-dev
  libpcap-dev libibverbs-dev librdmacm-dev libkeyutils-dev clang libclang-dev lld libudev-dev
  libunwind-dev liblzma-dev pkg-config zlib1g-dev python3-dev libblkid-dev git)
# The single-node cluster (tests/src/cluster): container runtime, pod network,
# kube-proxy's tools, the image builder and the Debian rootfs for the images,
# a C compiler and binutils for the static pause binary and the image binaries.
[ $cluster = 0 ] || packages+=(containerd runc containernetworking-plugins iptables conntrack
  iproute2 mmdebstrap buildah binutils gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing ${missing[*]}"
  timed "apt-get" sh -c 'apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null' apt "${missing[@]}"
fi

command -v cargo >/dev/null || { log "cargo is required (https://rustup.rs)"; exit 1; }
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
fi
# Without rustup the target must be in rustc's sysroot: the default policy is
# built for it, so its absence fails here, saying so, not in a build script.
if [ ! -d "$(rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown" ]; then
  log "the wasm32-unknown-unknown Rust target is missing (rustup target add wasm32-unknown-unknown)"
  exit 1
fi

# cargo-machete (unused dependencies, run by tests/test.sh): pinned, built
# once into the cache (about 4 min cold on 2 cores), then found there.
MACHETE_VERSION=0.9.2
tools="${MSP_CACHE_DIR:-/var/cache/msp-operator}/tools"
if [ "$("$tools/bin/cargo-machete" --version 2>/dev/null)" != "$MACHETE_VERSION" ]; then
  timed "cargo-machete" cargo install --quiet --locked --root "$tools" --target-dir "$tools/target" \
    cargo-machete --version "$MACHETE_VERSION"
  rm -rf "$tools/target"
fi

# The cluster's node components; the control plane's directory stays the only
# thing printed. Outside CI a failed build only skips the cluster tests.
if [ $cluster = 1 ] && ! timed "cluster components" "$here/cluster/build.sh" >/dev/null; then
  # The same test of CI as the tests' require(): true or 1.
  case "${CI:-}" in true | 1) exit 1 ;; esac
  log "the cluster's node components could not be built: the cluster tests will be skipped"
fi

if [ $io_engine = 1 ]; then
  # Its output goes to the log; the binary's directory is not printed here.
  timed "io-engine" "$here/io-engine/build.sh" >/dev/null
fi

# helm and promtool for the chart and alert tests (tests/helm, tests/promtool:
# pinned wrapper modules, built -mod=readonly). Outside CI a failed build only
# skips those tests.
for tool in helm promtool; do
  if ! timed "$tool" "$here/$tool/build.sh" >/dev/null; then
    case "${CI:-}" in true | 1) exit 1 ;; esac
    log "$tool could not be built: the tests needing it will be skipped"
  fi
done

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "$KUBEBUILDER_ASSETS"
else
  timed "control plane" "$here/control-plane/build.sh"
fi
