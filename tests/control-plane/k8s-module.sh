# Sourced by the build scripts: the Go environment and the committed wrapper
# modules every Go binary of the project is built from.
#
# k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces them with
# local paths, which a dependent module does not inherit; so the wrapper
# replaces each of them with the published module of the same release.
#
# Each wrapper module's go.mod and go.sum are committed (update-modules.sh
# writes them); a build copies them and builds with -mod=readonly, so every
# module downloaded is checked against the committed sums, a mismatch fails,
# and nothing is resolved afresh.

export GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}

_k8s_module_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# One k8s.io/kubernetes wrapper per build script, each resolved for the
# commands it builds (resolved for all six, the module records other versions
# of some staging modules and the binaries' embedded module lists differ).
K8S_MODULE="$_k8s_module_here/modules/kubernetes"
K8S_COMMANDS=(kube-apiserver kubectl)
ETCD_MODULE="$_k8s_module_here/modules/etcd"
CLUSTER_K8S_MODULE="$_k8s_module_here/../cluster/modules/kubernetes"
CLUSTER_K8S_COMMANDS=(kubelet kube-controller-manager kube-scheduler kube-proxy)
COREDNS_MODULE="$_k8s_module_here/../cluster/modules/coredns"

# module_version MODULE_DIR PATH: the version of PATH the committed go.mod requires.
module_version() {
  local v
  v=$(awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod")
  [ -n "$v" ] || { echo "$1/go.mod does not require $2" >&2; return 1; }
  echo "$v"
}

# pinned_version NAME ENV_VALUE MODULE_DIR PATH: the committed version; a
# different one asked for through the environment needs new sums first.
pinned_version() {
  local v
  v=$(module_version "$3" "$4") || return 1
  if [ -n "$2" ] && [ "$2" != "$v" ]; then
    echo "$1=$2 but $3/go.mod pins $v: run tests/control-plane/update-modules.sh and commit go.mod and go.sum" >&2
    return 1
  fi
  echo "$v"
}

# copy_module MODULE_DIR DEST: the committed go.mod and go.sum into DEST.
copy_module() {
  mkdir -p "$2"
  cp "$1/go.mod" "$1/go.sum" "$2/"
}

# built_from MODULE_DIR DEST: whether the module a cached build used (its
# go.sum in DEST) holds only sums that are in the committed go.sum, i.e. the
# cached binaries were built from checked sources.
built_from() {
  [ -f "$2/go.sum" ] && ! grep -qvxF -f "$1/go.sum" "$2/go.sum"
}

K8S_STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller)

# k8s_wrapper_module DIR VERSION: writes DIR/go.mod for k8s.io/kubernetes
# VERSION (used by update-modules.sh).
k8s_wrapper_module() {
  local dir=$1 version=$2 m
  local staging_version="v0.${version#v1.}"
  mkdir -p "$dir"
  {
    echo "module msp-operator/kubernetes"
    echo
    echo "go 1.24"
    echo
    echo "replace ("
    for m in "${K8S_STAGING[@]}"; do echo "	k8s.io/$m => k8s.io/$m $staging_version"; done
    echo ")"
  } >"$dir/go.mod"
}

# k8s_version_ldflags VERSION: what `--version` of each binary reports.
k8s_version_ldflags() {
  local version=$1 minor p flags=""
  minor=${version#v1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$flags"
}
