#!/usr/bin/env bash
# Prints the Debian/Ubuntu packages that own the shared libraries a binary loads (one a line), so
# the runtime stage of deploy/Dockerfile* installs exactly those and no -dev package.
# usage: deploy/runtime-packages.sh build/kvfold > runtime-packages.txt
set -euo pipefail
binary="$1"
# Merged /usr: ldd may print /lib/... while dpkg registered /usr/lib/... (or the reverse).
owner() {
  local path="$1"
  for candidate in "${path}" "/usr${path}" "${path#/usr}"; do
    if dpkg -S "${candidate}" 2>/dev/null; then return 0; fi
  done
  echo "runtime-packages: no package owns ${path}" >&2
  return 1
}
ldd "${binary}" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do
  owner "${lib}" || owner "$(readlink -f "${lib}")"
done | cut -d: -f1 | sort -u
