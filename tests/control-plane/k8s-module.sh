# Sourced by the build scripts: the Go environment and the wrapper module
# every Kubernetes binary of the project is built from.
#
# k8s.io/kubernetes pins its staging modules at v0.0.0 and replaces them with
# local paths, which a dependent module does not inherit; so the wrapper
# replaces each of them with the published module of the same release.

export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
# The checksum database is not reachable from CI; go.sum still records hashes.
export GOSUMDB=${GOSUMDB:-off}
export GOMODCACHE=${GOMODCACHE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE:-$CACHE/go/build}

K8S_STAGING=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
  endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
  kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission
  sample-apiserver sample-cli-plugin sample-controller)

# k8s_wrapper_module DIR VERSION: writes DIR/go.mod for k8s.io/kubernetes VERSION.
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
