#!/usr/bin/env bash
# Builds the real helm CLI from Go modules (the wrapper module here) into the
# cache, and prints the directory holding it (tests/go-tool/build.sh says how).
#
# Helm 4 (v4.3.2, the newest release): Helm 3 gets no fixes after November
# 2026, and Helm 4 is what new OpenEBS installs use; its Kubernetes libraries
# (v0.37) support clusters down to 1.34, the tests' cluster. To move: change
# the version here, `go get helm.sh/helm/v4@VERSION && go mod tidy` in this
# directory, commit go.mod and go.sum.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../go-tool/build.sh
. "$here/../go-tool/build.sh"

HELM_VERSION=v4.3.2
go_tool_build helm helm.sh/helm/v4 "$HELM_VERSION" helm.sh/helm/v4/cmd/helm "$here" version \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
