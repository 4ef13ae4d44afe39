#!/usr/bin/env bash
# Builds the test cluster's container images with a real OCI builder (buildah)
# and prints the directory holding them as docker-archive tarballs, ready for
# `ctr images import`, plus an `images` file (one "role reference tarball" a line):
#
#   operator      deploy/docker/operator.Dockerfile, BINARIES=prebuilt
#   storage-node  deploy/docker/storage-node.Dockerfile, BINARIES=prebuilt
#   pause         the pod sandbox (static pause from tests/cluster/build.sh)
#   coredns       CoreDNS (static binary from tests/cluster/build.sh)
#
# No image registry is reachable, so the Debian base both Dockerfiles stand on
# is made here: a bookworm rootfs from Debian's archive with mmdebstrap
# (minbase, without docs and locales, like debian:bookworm-slim), imported
# under the name the storage node's FROM uses. The operator's distroless base
# is replaced by the same image through RUNTIME_IMAGE.
#
#   images.sh OPERATOR_BINARY STORAGE_NODE_BINARY CLUSTER_BIN_DIR
#
# The binaries are built on the host (cargo); their debug info is stripped for
# the images. Cached under $MSP_CACHE_DIR/images/<hash of every input>/, so an
# unchanged build costs nothing; the three newest are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -eq 3 ] || { echo "usage: $0 OPERATOR_BINARY STORAGE_NODE_BINARY CLUSTER_BIN_DIR" >&2; exit 2; }
operator_bin=$1 storage_node_bin=$2 cluster_bin=$3
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
for f in "$operator_bin" "$storage_node_bin" "$cluster_bin/pause" "$cluster_bin/coredns"; do
  [ -x "$f" ] || { log "missing $f"; exit 1; }
done

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
start=$(date +%s)

if [ ! -f "$BASE/rootfs.tar" ]; then
  log "making a Debian $SUITE rootfs with mmdebstrap"
  mkdir -p "$BASE"
  rm -f "$BASE/rootfs.tar.partial"
  nice mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$BASE/rootfs.tar.partial" "$MIRROR" >&2
  mv "$BASE/rootfs.tar.partial" "$BASE/rootfs.tar"
fi

# The build contexts: only what each Dockerfile copies.
ctx=$(mktemp -d "$ROOT/.context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/app/prebuilt" "$ctx/pause" "$ctx/coredns" "$ctx/base"
objcopy --strip-debug "$operator_bin" "$ctx/app/prebuilt/msp-operator"
objcopy --strip-debug "$storage_node_bin" "$ctx/app/prebuilt/storage-node"
cp "$cluster_bin/pause" "$ctx/pause/"
cp "$cluster_bin/coredns" "$ctx/coredns/"
ln "$BASE/rootfs.tar" "$ctx/base/rootfs.tar" 2>/dev/null || cp "$BASE/rootfs.tar" "$ctx/base/rootfs.tar"

key=$(cat "$ctx/app/prebuilt/"* "$ctx/pause/pause" "$ctx/coredns/coredns" "$BASE/rootfs.tar" \
  "$repo"/deploy/docker/*.Dockerfile "$here"/images/*.Dockerfile "$0" | sha256sum | cut -c1-16)
OUT="$ROOT/set-$key"
if [ -f "$OUT/images" ]; then
  log "cached in $OUT"
  echo "$OUT"
  exit 0
fi

STAGE="$OUT.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"
bah() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver overlay "$@"; }
# buildah leaves its layers' overlay mounts (and a bind mount of the store's
# overlay directory) behind when it exits; nothing of a build may stay mounted.
release_store() {
  bah rm --all >/dev/null 2>&1 || true
  bah umount --all >/dev/null 2>&1 || true
  awk -v root="$STORE/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}
trap release_store EXIT
bud() { bah bud --quiet --isolation chroot --pull=never --layers=false "$@" >&2; }
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
  bah push --quiet "$ref" "docker-archive:$STAGE/$role.tar:$ref" >&2
  echo "$role $ref $OUT/$role.tar" >>"$STAGE/images"
  log "$ref: $(du -m "$STAGE/$role.tar" | cut -f1) MiB"
  bah rmi --force "$ref" >/dev/null
done
mv "$STAGE" "$OUT"
# Keep the three newest sets (older binaries' images are never used again).
ls -1dt "$ROOT"/set-* 2>/dev/null | grep -v "\.partial$" | tail -n +4 | xargs -r rm -rf
log "built in $(( $(date +%s) - start ))s into $OUT"
echo "$OUT"
