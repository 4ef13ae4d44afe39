#!/usr/bin/env bash
# Checks the format (cargo fmt) and the lints (clippy, warnings are errors),
# then runs every test: unit tests, and end-to-end tests against a real etcd,
# kube-apiserver and kubectl, real storage node processes and loop devices,
# and the cluster tests: the operator and the Mayastor io-engine images
# installed from deploy/ into a real single-node Kubernetes, the engine as a
# DaemonSet pod (tests/tests/cluster.rs).
# Installs what is missing first (tests/setup.sh). Loop device tests need root;
# with CI=true anything missing fails the run instead of being skipped.
# Extra arguments go to `cargo test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
KUBEBUILDER_ASSETS=$("$here/setup.sh")
export KUBEBUILDER_ASSETS
cd "$here/.."
# One format and no lint findings, before anything runs.
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
fi
cargo fmt --all --check
# No dependency that no code uses (cargo-machete, installed by setup.sh).
"${MSP_CACHE_DIR:-/var/cache/msp-operator}/tools/bin/cargo-machete"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Benchmarks are not run here (they print figures, they assert nothing), but
# they are compiled, so that they cannot rot.
cargo test --workspace --locked --benches --no-run
# The operator binary the cluster test packs into its image (and
# operator_binary runs), built in the same profile as the tests.
cargo build --locked -p msp-operator --bin msp-operator
cargo test --workspace --locked "$@"
