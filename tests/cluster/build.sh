#!/usr/bin/env bash
# Builds the node components of a real single-node Kubernetes from Go modules
# into a versioned cache directory outside the repository, and prints the
# directory holding them: kubelet, kube-controller-manager, kube-scheduler and
# kube-proxy (from the same k8s.io/kubernetes wrapper module and release as the
# control plane's kube-apiserver), CoreDNS, and the static `pause` binary of the
# pod sandbox image (Kubernetes' own pause.c, from the same module).
#
# Does nothing when cached. A lock serialises concurrent cold builds, and the
# binaries are built into a staging directory moved into place last, so an
# interrupted build never looks cached. Go's module and build caches are the
# control plane's, so packages it compiled are not compiled again.
#
# The releases are the ones the committed wrapper modules pin
# (modules/kubernetes, modules/coredns; ../control-plane/update-modules.sh
# moves them), and every downloaded module is checked against their committed
# go.sum.
#
#   MSP_CACHE_DIR    root of the cache (default /var/cache/msp-operator)
#   K8S_VERSION      if set, must be the Kubernetes release the module pins
#   COREDNS_VERSION  if set, must be the CoreDNS release the module pins
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
# shellcheck source=../control-plane/k8s-module.sh
. "$here/../control-plane/k8s-module.sh"
K8S_VERSION=$(pinned_version K8S_VERSION "${K8S_VERSION:-}" "$CLUSTER_K8S_MODULE" k8s.io/kubernetes)
COREDNS_VERSION=$(pinned_version COREDNS_VERSION "${COREDNS_VERSION:-}" "$COREDNS_MODULE" github.com/coredns/coredns)
OUT="$CACHE/cluster/k8s-$K8S_VERSION-coredns-$COREDNS_VERSION"
BIN="$OUT/bin"
COMPONENTS=("${CLUSTER_K8S_COMMANDS[@]}")

log() { printf 'cluster: %s\n' "$*" >&2; }

# Binaries count as cached only if built from modules whose sums are all committed.
cached() {
  local b
  for b in "${COMPONENTS[@]}" coredns pause; do [ -x "$BIN/$b" ] || return 1; done
  built_from "$CLUSTER_K8S_MODULE" "$OUT/src/kubernetes" && built_from "$COREDNS_MODULE" "$OUT/src/coredns"
}
if cached; then
  log "cached in $BIN"
  echo "$BIN"
  exit 0
fi
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9
if cached; then
  log "cached in $BIN (built by another run meanwhile)"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required (https://go.dev) to build the cluster components"; exit 1; }
command -v cc >/dev/null || { log "a C compiler is required for the pause binary"; exit 1; }
STAGE="$OUT/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$OUT/src"
start=$(date +%s)

k8s="$OUT/src/kubernetes"
copy_module "$CLUSTER_K8S_MODULE" "$k8s"
pkgs=()
for c in "${COMPONENTS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
(
  cd "$k8s"
  log "building ${COMPONENTS[*]} (k8s.io/kubernetes $K8S_VERSION)"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $(k8s_version_ldflags "$K8S_VERSION")" -o "$STAGE/" "${pkgs[@]}"
)

# The pod sandbox's pause process, static so that the image needs nothing else.
pause_src="$(cd "$k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
cc -Os -static -DVERSION="$K8S_VERSION" -o "$STAGE/pause" "$pause_src"
strip "$STAGE/pause"

coredns="$OUT/src/coredns"
copy_module "$COREDNS_MODULE" "$coredns"
(
  cd "$coredns"
  log "building CoreDNS $COREDNS_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$STAGE/coredns" github.com/coredns/coredns
)

for c in "${COMPONENTS[@]}"; do "$STAGE/$c" --version >&2; done
"$STAGE/coredns" -version >&2
rm -rf "$BIN"
mv "$STAGE" "$BIN"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
