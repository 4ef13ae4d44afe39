# Sourced by tests/helm/build.sh and tests/promtool/build.sh: builds one Go
# command from the wrapper module in a directory (its go.mod names the command
# in a `tool` directive and pins it; go.sum pins every dependency) into a
# cache directory outside the repository, and prints the directory holding it.
#
# The build runs with -mod=readonly, so every module downloaded is checked
# against the committed go.sum and nothing is re-resolved. The cache directory
# is keyed by the version and a hash of go.mod and go.sum: a changed pin builds
# afresh. Does nothing when cached; a lock serialises concurrent cold builds,
# and the binary is built into a staging directory moved into place last, so
# an interrupted build never looks cached. Go's module and build caches are
# the control plane's.
#
#   MSP_CACHE_DIR  root of the cache (default /var/cache/msp-operator)

# go_tool_build NAME MODULE VERSION PACKAGE MODULE_DIR VERSION_FLAG [go build flags...]
# (VERSION_FLAG: how the built binary prints its version, a smoke test)
go_tool_build() {
  local name=$1 module=$2 version=$3 package=$4 dir=$5 version_flag=$6
  shift 6
  local cache=${MSP_CACHE_DIR:-/var/cache/msp-operator} key out bin stage start
  log() { printf '%s: %s\n' "$name" "$*" >&2; }
  key=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-12)
  out="$cache/$name/$name-$version-$key"
  bin="$out/bin"
  if [ -x "$bin/$name" ]; then
    log "cached in $bin"
    echo "$bin"
    return 0
  fi
  mkdir -p "$out"
  exec 9>"$out/.build.lock"
  flock 9
  if [ -x "$bin/$name" ]; then
    log "cached in $bin (built by another run meanwhile)"
    echo "$bin"
    return 0
  fi
  command -v go >/dev/null || { log "go is required (https://go.dev) to build $name"; return 1; }
  grep -q "^	$module $version " "$dir/go.mod" ||
    { log "$dir/go.mod does not pin $module $version"; return 1; }
  export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
  # The checksum database is not reachable from CI: go.sum is the check.
  export GOSUMDB=${GOSUMDB:-off}
  export GOMODCACHE=${GOMODCACHE:-$cache/go/mod}
  export GOCACHE=${GOCACHE:-$cache/go/build}
  stage="$out/bin.partial"
  rm -rf "$stage"
  mkdir -p "$stage"
  start=$(date +%s)
  log "building $module $version"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath "$@" -o "$stage/$name" "$package")
  "$stage/$name" "$version_flag" >&2
  rm -rf "$bin"
  mv "$stage" "$bin"
  log "built in $(( $(date +%s) - start ))s into $bin"
  echo "$bin"
}
