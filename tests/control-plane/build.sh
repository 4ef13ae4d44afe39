#!/usr/bin/env bash
# Builds real etcd, kube-apiserver and kubectl from Go modules into a versioned
# cache directory outside the repository, and prints that directory.
#
# Does nothing when the binaries are already there, so a second run costs
# nothing. The cache lives outside the clone because CI clones afresh each time.
#
# The releases are the ones the committed wrapper modules pin
# (modules/kubernetes, modules/etcd; update-modules.sh moves them), and every
# downloaded module is checked against their committed go.sum.
#
#   MSP_CACHE_DIR  root of the cache (default /var/cache/msp-operator)
#   K8S_VERSION    if set, must be the Kubernetes release modules/kubernetes pins
#   ETCD_VERSION   if set, must be the etcd release modules/etcd pins
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
# shellcheck source=k8s-module.sh
. "$here/k8s-module.sh"
K8S_VERSION=$(pinned_version K8S_VERSION "${K8S_VERSION:-}" "$K8S_MODULE" k8s.io/kubernetes)
ETCD_VERSION=$(pinned_version ETCD_VERSION "${ETCD_VERSION:-}" "$ETCD_MODULE" go.etcd.io/etcd/server/v3)
OUT="$CACHE/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BIN="$OUT/bin"

log() { printf 'control-plane: %s\n' "$*" >&2; }

# Binaries count as cached only if built from modules whose sums are all committed.
cached() {
  [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ] \
    && built_from "$K8S_MODULE" "$OUT/src/kubernetes" && built_from "$ETCD_MODULE" "$OUT/src/etcd"
}
if cached; then
  log "cached in $BIN"
  echo "$BIN"
  exit 0
fi

# Test binaries run by different cargo invocations may ask at the same time:
# one builds, the others wait for it and then find the cache.
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9
if cached; then
  log "cached in $BIN (built by another run meanwhile)"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required (https://go.dev) to build the control plane"; exit 1; }
# Built into a staging dir and moved into place at the end, so that an
# interrupted build never leaves binaries that look cached.
STAGE="$OUT/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$OUT/src"
start=$(date +%s)

k8s="$OUT/src/kubernetes"
copy_module "$K8S_MODULE" "$k8s"
(
  cd "$k8s"
  log "building kube-apiserver and kubectl (k8s.io/kubernetes $K8S_VERSION)"
  go build -trimpath -ldflags "-s -w $(k8s_version_ldflags "$K8S_VERSION")" -o "$STAGE/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)

# etcd: `go install` refuses its go.mod replace directives, so a separate
# wrapper module requires the server module and builds it (package main).
etcd="$OUT/src/etcd"
copy_module "$ETCD_MODULE" "$etcd"
(
  cd "$etcd"
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
)

"$STAGE/kube-apiserver" --version >&2
"$STAGE/kubectl" version --client >&2
"$STAGE/etcd" --version >&2
rm -rf "$BIN"
mv "$STAGE" "$BIN"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
