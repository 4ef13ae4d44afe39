#!/usr/bin/env bash
# Builds the test cluster's container images with a real OCI builder (buildah)
# and prints the directory holding them as docker-archive tarballs, ready for
# `ctr images import`, plus an `images` file (one "role reference tarball" a line):
#
#   operator      deploy/docker/operator.Dockerfile, BINARIES=prebuilt
#   storage-node  deploy/docker/storage-node.Dockerfile, BINARIES=prebuilt
#   pause         the pod sandbox (static pause from tests/cluster/build.sh)
#   coredns       CoreDNS (static binary from tests/cluster/build.sh)
#   io-engine     deploy/docker/io-engine.Dockerfile: the Mayastor io-engine that
#                 tests/io-engine/build.sh built (when its binary is given)
#
# No image registry is reachable, so the Debian base both Dockerfiles stand on
# is made here: a bookworm rootfs from Debian's archive with mmdebstrap
# (minbase, without docs and locales, like debian:bookworm-slim), imported
# under the name the storage node's FROM uses. The operator's distroless base
# is replaced by the same image through RUNTIME_IMAGE.
#
#   images.sh OPERATOR_BINARY STORAGE_NODE_BINARY CLUSTER_BIN_DIR [IO_ENGINE_BINARY]
#
# The binaries are built on the host (cargo); their debug info is stripped for
# the images. Cached under $MSP_CACHE_DIR/images/<hash of every input>/, so an
# unchanged build costs nothing; the three newest are kept.
#
# The io-engine image is Debian slim plus exactly the packages of the shared
# libraries the binary loads (ldd on this machine, where it was linked:
# tests/io-engine/runtime-packages.sh), checked by running ldd inside the
# image's rootfs. Its rootfs and image are cached by content on their own
# (the binary rarely changes, the operator's at every commit).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 3 ] || [ $# -eq 4 ] || {
  echo "usage: $0 OPERATOR_BINARY STORAGE_NODE_BINARY CLUSTER_BIN_DIR [IO_ENGINE_BINARY]" >&2
  exit 2
}
operator_bin=$1 storage_node_bin=$2 cluster_bin=$3 io_engine_bin=${4:-}
CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT="$CACHE/images"
BASE="$ROOT/base-debian-$SUITE-minbase"
STORE="$ROOT/buildah"

log() { printf 'images: %s\n' "$*" >&2; }
for tool in buildah mmdebstrap objcopy sha256sum; do
  command -v "$tool" >/dev/null || { log "$tool is required (tests/setup.sh installs it)"; exit 1; }
done
for f in "$operator_bin" "$storage_node_bin" "$cluster_bin/pause" "$cluster_bin/coredns" $io_engine_bin; do
  [ -x "$f" ] || { log "missing $f"; exit 1; }
done

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
start=$(date +%s)

# A Debian rootfs (minbase, without docs and locales) in DIR/rootfs.tar,
# with the packages given besides.
make_rootfs() { # DIR [PACKAGE...]
  local dir=$1 include
  shift
  [ -f "$dir/rootfs.tar" ] && return 0
  include=$(IFS=,; echo "$*")
  log "making a Debian $SUITE rootfs with mmdebstrap${include:+ (with $include)}"
  mkdir -p "$dir"
  rm -f "$dir/rootfs.tar.partial"
  nice mmdebstrap --quiet --mode=root --variant=minbase --format=tar ${include:+--include="$include"} \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$dir/rootfs.tar.partial" "$MIRROR" >&2
  mv "$dir/rootfs.tar.partial" "$dir/rootfs.tar"
}
make_rootfs "$BASE"

bah() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }
bud() { bah bud --quiet --isolation chroot --pull=never --layers=false "$@" >&2; }
# The build contexts: only what each Dockerfile copies.
ctx=$(mktemp -d "$ROOT/.context.XXXXXX")
# buildah leaves its layers' overlay mounts (and a bind mount of the store's
# overlay directory) behind when it exits; nothing of a build may stay mounted.
release_store() {
  bah rm --all >/dev/null 2>&1 || true
  bah umount --all >/dev/null 2>&1 || true
  awk -v root="$STORE/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf "$ctx"
}
trap release_store EXIT
# An image into a docker-archive tarball, its size logged; removed from the store.
archive() { # REFERENCE TARBALL
  bah push --quiet "$1" "docker-archive:$2:$1" >&2
  log "$1: $(du -m "$2" | cut -f1) MiB"
  bah rmi --force "$1" >/dev/null
}

# --- the io-engine image, cached on its own -----------------------------------
io_engine_line=""
if [ -n "$io_engine_bin" ]; then
  # The package list of this binary, by its content (dpkg -S is slow).
  bin_key=$(sha256sum "$io_engine_bin" | cut -c1-16)
  list="$ROOT/io-engine-packages-$bin_key"
  if [ ! -f "$list" ]; then
    "$repo/tests/io-engine/runtime-packages.sh" "$io_engine_bin" >"$list.partial"
    mv "$list.partial" "$list"
    ls -1t "$ROOT"/io-engine-packages-* | grep -v "\.partial$" | tail -n +3 | xargs -r rm -f
  fi
  packages=$(cat "$list")
  # shellcheck disable=SC2086 # one package a word
  set -- $packages
  IO_BASE="$ROOT/base-debian-$SUITE-minbase-$(echo "$*" | sha256sum | cut -c1-12)"
  make_rootfs "$IO_BASE" "$@"
  io_key=$( (echo "$bin_key"; cat "$IO_BASE/rootfs.tar" "$repo/deploy/docker/io-engine.Dockerfile" \
    "$here/images/base.Dockerfile" "$0") | sha256sum | cut -c1-16)
  IO_OUT="$ROOT/io-engine-$io_key"
  io_ref="localhost/msp-io-engine:$io_key"
  if [ ! -f "$IO_OUT/io-engine.tar" ]; then
    log "building the io-engine image (tag $io_key) with $*"
    mkdir -p "$ctx/io-engine" "$ctx/io-base"
    objcopy --strip-debug "$io_engine_bin" "$ctx/io-engine/io-engine"
    ln "$IO_BASE/rootfs.tar" "$ctx/io-base/rootfs.tar" 2>/dev/null || cp "$IO_BASE/rootfs.tar" "$ctx/io-base/rootfs.tar"
    # Every library found inside the image, as on the host: ldd in its rootfs.
    check="$ctx/io-check"
    mkdir -p "$check"
    tar -xf "$IO_BASE/rootfs.tar" -C "$check"
    cp "$ctx/io-engine/io-engine" "$check/io-engine"
    missing=$(chroot "$check" /usr/bin/ldd /io-engine | grep "not found" || true)
    rm -rf "$check"
    [ -z "$missing" ] || { log "libraries missing in the io-engine image: $missing"; exit 1; }
    bud -f "$here/images/base.Dockerfile" -t "localhost/io-engine-base:$io_key" "$ctx/io-base"
    bud -f "$repo/deploy/docker/io-engine.Dockerfile" \
      --build-arg "RUNTIME_IMAGE=localhost/io-engine-base:$io_key" -t "$io_ref" "$ctx/io-engine"
    bah rmi --force "localhost/io-engine-base:$io_key" >/dev/null
    rm -rf "$IO_OUT.partial"
    mkdir -p "$IO_OUT.partial"
    archive "$io_ref" "$IO_OUT.partial/io-engine.tar"
    # The archive names its final place.
    mv "$IO_OUT.partial" "$IO_OUT"
    # Keep the two newest (a new io-engine build replaces the old one).
    ls -1dt "$ROOT"/io-engine-[0-9a-f]* 2>/dev/null | grep -v "\.partial$" | tail -n +3 | xargs -r rm -rf
  fi
  io_engine_line="io-engine $io_ref $IO_OUT/io-engine.tar"
fi

# --- the set of the others --------------------------------------------------------
mkdir -p "$ctx/app/prebuilt" "$ctx/pause" "$ctx/coredns" "$ctx/base"
objcopy --strip-debug "$operator_bin" "$ctx/app/prebuilt/msp-operator"
objcopy --strip-debug "$storage_node_bin" "$ctx/app/prebuilt/storage-node"
cp "$cluster_bin/pause" "$ctx/pause/"
cp "$cluster_bin/coredns" "$ctx/coredns/"
ln "$BASE/rootfs.tar" "$ctx/base/rootfs.tar" 2>/dev/null || cp "$BASE/rootfs.tar" "$ctx/base/rootfs.tar"

key=$( (cat "$ctx/app/prebuilt/"* "$ctx/pause/pause" "$ctx/coredns/coredns" "$BASE/rootfs.tar" \
  "$repo"/deploy/docker/*.Dockerfile "$here"/images/*.Dockerfile "$0"; echo "$io_engine_line") |
  sha256sum | cut -c1-16)
OUT="$ROOT/set-$key"
if [ -f "$OUT/images" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

STAGE="$OUT.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"
tag=$key
log "building images (tag $tag)"
bud -f "$here/images/base.Dockerfile" -t "docker.io/library/debian:$SUITE-slim" "$ctx/base"
bud -f "$here/images/pause.Dockerfile" -t "localhost/pause:$tag" "$ctx/pause"
bud -f "$here/images/coredns.Dockerfile" -t "localhost/coredns:$tag" "$ctx/coredns"
bud -f "$repo/deploy/docker/operator.Dockerfile" --build-arg BINARIES=prebuilt \
  --build-arg "RUNTIME_IMAGE=debian:$SUITE-slim" -t "localhost/msp-operator:$tag" "$ctx/app"
bud -f "$repo/deploy/docker/storage-node.Dockerfile" --build-arg BINARIES=prebuilt \
  -t "localhost/msp-storage-node:$tag" "$ctx/app"

: >"$STAGE/images"
for role in operator storage-node pause coredns; do
  case $role in
    operator) image=msp-operator ;;
    storage-node) image=msp-storage-node ;;
    *) image=$role ;;
  esac
  ref="localhost/$image:$tag"
  archive "$ref" "$STAGE/$role.tar"
  echo "$role $ref $OUT/$role.tar" >>"$STAGE/images"
done
[ -z "$io_engine_line" ] || echo "$io_engine_line" >>"$STAGE/images"
mv "$STAGE" "$OUT"
# Keep the three newest sets (older binaries' images are never used again).
ls -1dt "$ROOT"/set-* 2>/dev/null | grep -v "\.partial$" | tail -n +4 | xargs -r rm -rf
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
