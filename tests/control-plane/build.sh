#!/usr/bin/env bash
# Builds real etcd, kube-apiserver and kubectl from Go modules into a versioned
# cache directory outside the repository, and prints that directory.
#
# Does nothing when the binaries are already there, so a second run costs
# nothing. The cache lives outside the clone because CI clones afresh each time.
#
#   MSP_CACHE_DIR  root of the cache (default /var/cache/msp-operator)
#   K8S_VERSION    Kubernetes release to build (default v1.34.4)
#   ETCD_VERSION   etcd release to build (default v3.6.16)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
OUT="$CACHE/control-plane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BIN="$OUT/bin"

log() { printf 'control-plane: %s\n' "$*" >&2; }

cached() { [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ]; }
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
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}
# Built into a staging dir and moved into place at the end, so that an
# interrupted build never leaves binaries that look cached.
STAGE="$OUT/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$OUT/src"
start=$(date +%s)

# Kubernetes: k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces
# them with local paths, which a dependent module does not inherit; so the
# wrapper replaces each of them with the published module of the same release.
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller)
staging_version="v0.${K8S_VERSION#v1.}"
k8s="$OUT/src/kubernetes"
mkdir -p "$k8s"
{
  echo "module msp-operator/control-plane/kubernetes"
  echo
  echo "go 1.24"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m $staging_version"; done
  echo ")"
} >"$k8s/go.mod"
(
  cd "$k8s"
  log "fetching k8s.io/kubernetes $K8S_VERSION"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "building kube-apiserver and kubectl"
  go build -trimpath -ldflags "-s -w $ldflags" -o "$STAGE/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
)

# etcd: `go install` refuses its go.mod replace directives, so a separate
# wrapper module requires the server module and builds it (package main).
etcd="$OUT/src/etcd"
mkdir -p "$etcd"
printf 'module msp-operator/control-plane/etcd\n\ngo 1.24\n' >"$etcd/go.mod"
(
  cd "$etcd"
  log "fetching etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  log "building etcd"
  go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
)

"$STAGE/kube-apiserver" --version >&2
"$STAGE/kubectl" version --client >&2
"$STAGE/etcd" --version >&2
rm -rf "$BIN"
mv "$STAGE" "$BIN"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
