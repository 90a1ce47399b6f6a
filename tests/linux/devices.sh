#!/bin/bash
# CTest entry: ringzero's virtio devices (blk, rng, net, vsock) under Debian's
# kernel where /dev/kvm is hardware-assisted (the nested test host here).
# Usage: devices.sh SRC BUILD [case...]   (cases: see devices_in_host.sh)
set -u
src=$1 build=$2
shift 2
eval "$("$src/tests/kit/build")" || { echo "devices: guest kit build failed"; exit 1; }
tools=$build/tests/linux/guest-tools
# The sha256s of the test patterns, computed here at native speed (in the
# nested host hashing runs at TCG speed); /tmp is visible in there.
shas=$(mktemp /tmp/rz-devtest-shas.XXXXXX) || exit 1
trap 'rm -f "$shas"' EXIT
"$src/tests/linux/devices_in_host.sh" --pattern-shas "$tools/rz-sock" >"$shas" ||
  { echo "devices: cannot compute the pattern checksums (is $tools/rz-sock built?)"; exit 1; }
cd "$src" || exit 1
"$src/tests/nested/run" --timeout "${RZ_NESTED_TIMEOUT:-1700}" \
  --env "RZ_DEVTEST_SHAS=$shas" -- \
  "$src/tests/linux/devices_in_host.sh" "$build/ringzero" "$tools" "$RZKIT_DIR" "$@"
