#!/usr/bin/env bash
# The main job: a local control plane, a storage node and the operator with the
# bundled policy, with the seed's example pool applied. Ctrl-C stops it all.
#   --cluster    instead: a real single-node Kubernetes (kubelet, containerd, ...)
#                with deploy/base installed as pods and the example online (root)
#   --io-engine  the real Mayastor io-engine as the storage node instead of the
#                stand-in (root; builds it first when it is not cached)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The stand-in storage node needs no io-engine build.
if [ "${1:-}" != --io-engine ]; then
  export MSP_SKIP_IO_ENGINE=${MSP_SKIP_IO_ENGINE:-1}
fi
KUBEBUILDER_ASSETS=$("$here/setup.sh")
export KUBEBUILDER_ASSETS
cd "$here/.."
cargo build --locked -p msp-operator -p msp-tests --bins
if [ "${1:-}" = --cluster ]; then
  shift
  exec cargo run --locked -q -p msp-tests --bin msp-cluster-demo -- "$@"
fi
exec cargo run --locked -q -p msp-tests --bin msp-demo -- "$@"
