#!/usr/bin/env bash
# Writes the committed Go wrapper modules the build scripts build from: the
# go.mod and go.sum of k8s.io/kubernetes (one for the control plane's
# commands, one for the cluster's), etcd and CoreDNS. Run it by hand to move to another
# release; the build scripts never resolve anything themselves, they build
# with -mod=readonly against these sums and fail on a mismatch.
#
# The sums of anything not yet in go.sum are checked against the checksum
# database (GOSUMDB, default sum.golang.org, through the module proxy); this
# script refuses GOSUMDB=off, so a committed sum is one the database vouched for.
#
#   update-modules.sh K8S_VERSION ETCD_VERSION COREDNS_VERSION
#   e.g. update-modules.sh v1.34.4 v3.6.16 v1.15.0
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 3 ] || { echo "usage: $0 K8S_VERSION ETCD_VERSION COREDNS_VERSION" >&2; exit 2; }
k8s_version=$1 etcd_version=$2 coredns_version=$3
CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
# shellcheck source=k8s-module.sh
. "$here/k8s-module.sh"
# Resolving is what this script is for; the build scripts only read.
export GOFLAGS=-mod=mod
[ "${GOSUMDB:-}" != off ] || { echo "GOSUMDB=off: the new sums would be unchecked" >&2; exit 1; }

# write_module DIR MODULE_NAME PACKAGE@VERSION...: a fresh go.mod (with the
# replace block for kubernetes), then `go get`, which writes go.sum.
write_module() {
  local dir=$1 name=$2 tmp
  shift 2
  tmp=$(mktemp -d)
  if [ "$name" = msp-operator/kubernetes ]; then
    k8s_wrapper_module "$tmp" "$k8s_version"
  else
    printf 'module %s\n\ngo 1.24\n' "$name" >"$tmp/go.mod"
  fi
  (cd "$tmp" && go get "$@")
  mkdir -p "$dir"
  cp "$tmp/go.mod" "$tmp/go.sum" "$dir/"
  rm -rf "$tmp"
}

commands() { # COMMAND...: their packages at the release
  local c
  for c in "$@"; do echo "k8s.io/kubernetes/cmd/$c@$k8s_version"; done
}
# shellcheck disable=SC2046 # one package per word
write_module "$K8S_MODULE" msp-operator/kubernetes $(commands "${K8S_COMMANDS[@]}")
# shellcheck disable=SC2046
write_module "$CLUSTER_K8S_MODULE" msp-operator/kubernetes $(commands "${CLUSTER_K8S_COMMANDS[@]}")
write_module "$ETCD_MODULE" msp-operator/control-plane/etcd "go.etcd.io/etcd/server/v3@$etcd_version"
write_module "$COREDNS_MODULE" msp-operator/cluster/coredns "github.com/coredns/coredns@$coredns_version"
echo "updated $K8S_MODULE, $CLUSTER_K8S_MODULE, $ETCD_MODULE and $COREDNS_MODULE: commit go.mod and go.sum" >&2
