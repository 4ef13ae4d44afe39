#!/usr/bin/env bash
# Prints the Debian packages holding the shared libraries BINARY loads, one a
# line, sorted: what `ldd` resolves on this machine (the binary was linked
# here, against these packages), each file mapped to its package with
# `dpkg -S`. Fails when a library is not found or belongs to no package. The
# io-engine image installs exactly these (tests/cluster/images.sh).
#
#   runtime-packages.sh BINARY
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BINARY" >&2; exit 2; }
bin=$1
log() { printf 'runtime-packages: %s\n' "$*" >&2; }

libs=$(ldd "$bin") || { log "ldd $bin failed"; exit 1; }
if grep -q "not found" <<<"$libs"; then
  log "libraries of $bin not found here:"
  grep "not found" <<<"$libs" >&2
  exit 1
fi
# "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" and the loader's
# "/lib64/ld-linux-x86-64.so.2 (0x...)"; not the kernel's linux-vdso.
paths=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs" | sort -u)
for path in $paths; do
  # With merged /usr a library is found under /lib but packaged under
  # /usr/lib, or the other way round: ask for each spelling.
  real=$(readlink -f "$path")
  pkg=""
  for candidate in "$path" "$real" "/usr$real" "${real#/usr}"; do
    pkg=$(dpkg -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  [ -n "$pkg" ] || { log "$path ($real) belongs to no Debian package"; exit 1; }
  echo "$pkg"
done | sort -u
