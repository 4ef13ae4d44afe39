#!/usr/bin/env bash
# Builds the real OpenEBS Mayastor io-engine (debug profile) and the SPDK it
# links (with DPDK and ISA-L) from pinned sources into a versioned cache
# directory outside the repository, and prints the directory holding
# `io-engine`.
#
# Sources: the tarballs in MSP_IO_ENGINE_SOURCES (default: the vendored
# ../shared/vendor/io-engine beside the clone, when it exists), checked against
# their SHA256SUMS; otherwise the public repositories are cloned at the same
# commits. Its own Rust toolchain (1.72.0, what spdk-rs pins) is used for this
# build only. Debug, not release: 435 s instead of 720 s cold here, and the
# release build refuses to start with fewer than 1024 free hugepages.
#
# Does nothing when the binary is cached. A lock serialises concurrent cold
# builds; every step builds into a staging directory and moves it into place
# last, so an interrupted build never looks cached.
#
#   MSP_CACHE_DIR          root of the cache (default /var/cache/msp-operator)
#   MSP_IO_ENGINE_SOURCES  directory of the pinned source tarballs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Pinned commits (all public; what was measured with them: README, "The real
# io-engine", and docs/wire.md).
MAYASTOR=86f3f5a3af40b822fc529293f256bdbca036d8fc
SPDK_RS=77bf9d3bad2441eb6bfba938687c5450de0ddb9b
DEPS=0fea7bf8744eb51915a2e9d1468a4acf7c61bcdb
SPDK=50b064f553970b0f352691530e80f19b8432f034
DPDK=08f3a46de70afff49f55d175de690b5ad7e4a44d
ISAL=bd226375027899087bd48f3e59b910430615cc0a
ISAL_CRYPTO=08297dc3e76d65e1bad83a9c9f9e49059cf806b5
TOOLCHAIN=1.72.0

CACHE=${MSP_CACHE_DIR:-/var/cache/msp-operator}
OUT="$CACHE/io-engine/mayastor-${MAYASTOR:0:8}-spdk-${SPDK:0:8}"
BIN="$OUT/bin"

log() { printf 'io-engine: %s\n' "$*" >&2; }

cached() { [ -x "$BIN/io-engine" ]; }
if cached; then
  log "cached in $BIN"
  echo "$BIN"
  exit 0
fi
mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9
if cached; then
  log "cached in $BIN (built by another run meanwhile)"
  echo "$BIN"
  exit 0
fi
start=$(date +%s)

# --- sources -----------------------------------------------------------------
vendored="$here/../../../shared/vendor/io-engine"
SOURCES=${MSP_IO_ENGINE_SOURCES:-}
if [ -z "$SOURCES" ] && [ -d "$vendored" ]; then SOURCES=$(cd "$vendored" && pwd); fi

# name of each tarball: <owner>+<repo>-<commit8>.tar.gz, as the vendor dir has them
declare -A REPO=(
  [mayastor]="openebs/mayastor $MAYASTOR"
  [spdk-rs]="openebs/spdk-rs $SPDK_RS"
  [deps]="openebs/mayastor-dependencies $DEPS"
  [spdk]="openebs/spdk $SPDK"
  [dpdk]="DPDK/dpdk $DPDK"
  [isal]="intel/isa-l $ISAL"
  [isal-crypto]="intel/isa-l_crypto $ISAL_CRYPTO"
)
tarball_name() { # owner/repo commit
  echo "${1%%/*}+${1#*/}-${2:0:8}.tar.gz"
}

fetch_tarballs() { # into $1
  local dir=$1 key repo commit name
  mkdir -p "$dir"
  for key in "${!REPO[@]}"; do
    read -r repo commit <<<"${REPO[$key]}"
    name=$(tarball_name "$repo" "$commit")
    [ -f "$dir/$name" ] && continue
    if [ -n "$SOURCES" ]; then
      [ -f "$SOURCES/$name" ] || { log "missing $SOURCES/$name"; exit 1; }
      cp "$SOURCES/$name" "$dir/$name"
    else
      log "cloning $repo at ${commit:0:8}"
      rm -rf "$dir/clone"
      git init -q "$dir/clone"
      git -C "$dir/clone" fetch -q --depth 1 "https://github.com/$repo" "$commit"
      git -C "$dir/clone" archive --format=tar.gz -o "$dir/$name" "$commit"
      rm -rf "$dir/clone"
    fi
  done
  # Tarballs are checked against SHA256SUMS, every one of them: a missing
  # file or a tarball it does not list fails as a mismatch does (clones are
  # fetched by commit, which git checks itself).
  if [ -n "$SOURCES" ]; then
    local sums line
    sums=$(for key in "${!REPO[@]}"; do
      read -r repo commit <<<"${REPO[$key]}"
      name=$(tarball_name "$repo" "$commit")
      line=$(awk -v n="$name" '$2 == n && $1 ~ /^[0-9a-f]+$/ && length($1) == 64' "$SOURCES/SHA256SUMS")
      [ -n "$line" ] || { log "$SOURCES/SHA256SUMS does not list $name"; exit 1; }
      echo "$line"
    done) || exit 1
    (cd "$dir" && sha256sum -c --quiet --strict - <<<"$sums") \
      || { log "tarballs in $SOURCES do not match their SHA256SUMS"; exit 1; }
  fi
}

untar() { # key dest
  local repo commit
  read -r repo commit <<<"${REPO[$1]}"
  mkdir -p "$2"
  tar -xzf "$OUT/tarballs/$(tarball_name "$repo" "$commit")" -C "$2"
}

SRC="$OUT/src"
if [ ! -f "$SRC/.complete" ]; then
  fetch_tarballs "$OUT/tarballs"
  log "extracting sources"
  rm -rf "$SRC.partial"
  untar mayastor "$SRC.partial/mayastor"
  rm -rf "$SRC.partial/mayastor/spdk-rs" "$SRC.partial/mayastor/utils/dependencies"
  untar spdk-rs "$SRC.partial/mayastor/spdk-rs"
  untar deps "$SRC.partial/mayastor/utils/dependencies"
  untar spdk "$SRC.partial/spdk"
  rm -rf "$SRC.partial/spdk/dpdk" "$SRC.partial/spdk/isa-l" "$SRC.partial/spdk/isa-l-crypto"
  untar dpdk "$SRC.partial/spdk/dpdk"
  untar isal "$SRC.partial/spdk/isa-l"
  untar isal-crypto "$SRC.partial/spdk/isa-l-crypto"
  printf '[toolchain]\nchannel = "%s"\nprofile = "minimal"\n' "$TOOLCHAIN" >"$SRC.partial/mayastor/rust-toolchain.toml"
  touch "$SRC.partial/.complete"
  rm -rf "$SRC"
  mv "$SRC.partial" "$SRC"
fi

# --- SPDK + DPDK + ISA-L (static) ---------------------------------------------
SPDK_DIR="$OUT/spdk"
if [ ! -f "$SPDK_DIR/.complete" ]; then
  log "building SPDK, DPDK and ISA-L"
  t=$(date +%s)
  (
    cd "$SRC/spdk"
    # Debian's python3 (pyelftools), not a pyenv shim.
    export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
    AS=nasm ./configure --without-shared --with-uring --without-uring-zns --without-nvme-cuse \
      --without-fuse --disable-unit-tests --disable-tests --with-rdma --target-arch=nehalem \
      --without-crypto --without-fio --disable-apps --disable-examples >"$OUT/spdk-configure.log" 2>&1 \
      || { tail -40 "$OUT/spdk-configure.log" >&2; exit 1; }
    make -j"$(nproc)" >"$OUT/spdk-make.log" 2>&1 || { tail -60 "$OUT/spdk-make.log" >&2; exit 1; }
    rm -rf "$SPDK_DIR.partial"
    bash "$SRC/mayastor/spdk-rs/build_scripts/build_spdk.sh" --no-log --without-fio -s "$SRC/spdk" \
      -b release install "$SPDK_DIR.partial" >"$OUT/spdk-install.log" 2>&1 \
      || { tail -40 "$OUT/spdk-install.log" >&2; exit 1; }
  )
  # The pkg-config files name the staging prefix: point them at the final one.
  sed -i "s|$SPDK_DIR.partial|$SPDK_DIR|g" "$SPDK_DIR.partial"/lib/pkgconfig/*.pc
  touch "$SPDK_DIR.partial/.complete"
  rm -rf "$SPDK_DIR"
  mv "$SPDK_DIR.partial" "$SPDK_DIR"
  log "SPDK built in $(( $(date +%s) - t ))s"
fi
# An SPDK staged by an earlier version of this script kept the staging
# prefix; spdk-rs' build script ran against it and must run again.
if grep -qs "$SPDK_DIR.partial" "$SPDK_DIR"/lib/pkgconfig/*.pc; then
  sed -i "s|$SPDK_DIR.partial|$SPDK_DIR|g" "$SPDK_DIR"/lib/pkgconfig/*.pc
  rm -rf "$OUT"/target/debug/build/spdk-rs-* "$OUT"/target/debug/.fingerprint/spdk-rs-*
fi

# --- io-engine ------------------------------------------------------------------
command -v rustup >/dev/null || { log "rustup is required (toolchain $TOOLCHAIN for the io-engine)"; exit 1; }
rustup toolchain list | grep -q "^$TOOLCHAIN" || rustup toolchain install "$TOOLCHAIN" --profile minimal >&2
log "building io-engine (debug)"
t=$(date +%s)
(
  cd "$SRC/mayastor"
  # Clear what the caller's cargo may have set for the project's own build.
  unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET RUSTC RUSTDOC RUSTC_WRAPPER
  export RUSTUP_TOOLCHAIN=$TOOLCHAIN
  export SPDK_ROOT_DIR=$SPDK_DIR
  # spdk-rs' build.rs sets only nix's PKG_CONFIG_PATH_FOR_TARGET.
  export PKG_CONFIG_PATH=$SPDK_DIR/lib/pkgconfig
  # No .git in an archive: the version crate's fallbacks.
  export GIT_VERSION_LONG="v2.7.x-${MAYASTOR:0:8}" GIT_VERSION="${MAYASTOR:0:8}"
  export PROTOC=/usr/bin/protoc PROTOC_INCLUDE=/usr/include
  export LIBCLANG_PATH=${LIBCLANG_PATH:-$(ls -d /usr/lib/llvm-*/lib | sort -V | tail -1)}
  export CARGO_TARGET_DIR="$OUT/target"
  export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$HOME/.cargo/bin:$PATH
  cargo build --locked --bin io-engine >"$OUT/io-engine-build.log" 2>&1 \
    || { tail -60 "$OUT/io-engine-build.log" >&2; exit 1; }
)
log "io-engine built in $(( $(date +%s) - t ))s"
rm -rf "$BIN.partial"
mkdir -p "$BIN.partial"
cp "$OUT/target/debug/io-engine" "$BIN.partial/io-engine"
rm -rf "$BIN"
mv "$BIN.partial" "$BIN"
log "built in $(( $(date +%s) - start ))s into $BIN"
echo "$BIN"
