#!/usr/bin/env bash
# Builds the real promtool (Prometheus' rule checker and rule unit tester)
# from Go modules (the wrapper module here) into the cache, and prints the
# directory holding it (tests/go-tool/build.sh says how).
#
# Prometheus 3.16.0 (Go module version v0.316.0), the newest release. Built
# with the tag remove_all_sd: the rule checks and tests need no service
# discovery, so the service discovery plugins and the cloud SDKs they pull
# in (Azure, GCE, …) are not compiled. To move: change the version here,
# `go get github.com/prometheus/prometheus@VERSION` and
# `go list -mod=mod -deps -tags remove_all_sd github.com/prometheus/prometheus/cmd/promtool`
# in this directory (go.sum then holds just what the build needs), commit
# go.mod and go.sum.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../go-tool/build.sh
. "$here/../go-tool/build.sh"

PROMETHEUS_VERSION=v0.316.0
go_tool_build promtool github.com/prometheus/prometheus "$PROMETHEUS_VERSION" \
  github.com/prometheus/prometheus/cmd/promtool "$here" --version -tags remove_all_sd \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.16.0 -X github.com/prometheus/common/version.Branch=v3.16.0"
