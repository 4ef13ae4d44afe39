#!/usr/bin/env bash
# The main job: a local control plane, a storage node and the operator with the
# bundled policy, with the seed's example pool applied. Ctrl-C stops it all.
#   --cluster    instead: the production shape in a real single-node Kubernetes
#                (kubelet, containerd, ...): deploy/base and the io-engine
#                overlay installed as pods, the example online on the real
#                Mayastor io-engine (root; builds the cluster's components and
#                the io-engine first when they are not cached)
#   --cluster --stand-in
#                the same cluster with the stand-in overlay: the project's test
#                double of the engine (stores nothing real; no io-engine build)
#   --io-engine  the real Mayastor io-engine as the storage node instead of the
#                stand-in, without a cluster (root; builds it first when it is
#                not cached)
# Only what the chosen demo uses is installed and built (tests/setup.sh flags).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=0 stand_in=0 io_engine=0
args=()
for arg in "$@"; do
  case $arg in
    --cluster) cluster=1 ;;
    --stand-in) stand_in=1; args+=("$arg") ;;
    --io-engine) io_engine=1; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
setup=()
[ $cluster = 1 ] || setup+=(--no-cluster)
if [ $cluster = 1 ] && [ $stand_in = 1 ]; then setup+=(--no-io-engine); fi
if [ $cluster = 0 ] && [ $io_engine = 0 ]; then setup+=(--no-io-engine); fi
KUBEBUILDER_ASSETS=$("$here/setup.sh" "${setup[@]}")
export KUBEBUILDER_ASSETS
cd "$here/.."
cargo build --locked -p msp-operator -p msp-tests --bins
if [ $cluster = 1 ]; then
  exec cargo run --locked -q -p msp-tests --bin msp-cluster-demo -- "${args[@]}"
fi
exec cargo run --locked -q -p msp-tests --bin msp-demo -- "${args[@]}"
