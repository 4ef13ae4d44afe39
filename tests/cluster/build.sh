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
#   MSP_CACHE_DIR    root of the cache (default /var/cache/msp-operator)
#   K8S_VERSION      Kubernetes release (default v1.34.4)
#   COREDNS_VERSION  CoreDNS release (default v1.15.0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

K8S_VERSION=${K8S_VERSION:-v1.34.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
OUT="$CACHE/cluster/k8s-$K8S_VERSION-coredns-$COREDNS_VERSION"
BIN="$OUT/bin"
COMPONENTS=(kubelet kube-controller-manager kube-scheduler kube-proxy)

log() { printf 'cluster: %s\n' "$*" >&2; }

cached() {
  local b
  for b in "${COMPONENTS[@]}" coredns pause; do [ -x "$BIN/$b" ] || return 1; done
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
# shellcheck source=../control-plane/k8s-module.sh
. "$here/../control-plane/k8s-module.sh"
STAGE="$OUT/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$OUT/src"
start=$(date +%s)

k8s="$OUT/src/kubernetes"
k8s_wrapper_module "$k8s" "$K8S_VERSION"
pkgs=()
for c in "${COMPONENTS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
(
  cd "$k8s"
  log "fetching k8s.io/kubernetes $K8S_VERSION"
  go get "${pkgs[@]/%/@$K8S_VERSION}"
  log "building ${COMPONENTS[*]}"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $(k8s_version_ldflags "$K8S_VERSION")" -o "$STAGE/" "${pkgs[@]}"
)

# The pod sandbox's pause process, static so that the image needs nothing else.
pause_src="$(cd "$k8s" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
cc -Os -static -DVERSION="$K8S_VERSION" -o "$STAGE/pause" "$pause_src"
strip "$STAGE/pause"

coredns="$OUT/src/coredns"
mkdir -p "$coredns"
printf 'module msp-operator/cluster/coredns\n\ngo 1.24\n' >"$coredns/go.mod"
(
  cd "$coredns"
  log "fetching CoreDNS $COREDNS_VERSION"
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  log "building CoreDNS"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$STAGE/coredns" github.com/coredns/coredns
)

for c in "${COMPONENTS[@]}"; do "$STAGE/$c" --version >&2; done
"$STAGE/coredns" -version >&2
rm -rf "$BIN"
mv "$STAGE" "$BIN"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
