#!/bin/bash
# CTest entry: ringzero's virtio devices (blk, rng, net, vsock) under Debian's
# kernel where /dev/kvm is hardware-assisted (the nested test host here).
# Usage: devices.sh SRC BUILD [case...]   (cases: see devices_in_host.sh)
set -u
src=$1 build=$2
shift 2
eval "$("$src/tests/kit/build")" || { echo "devices: guest kit build failed"; exit 1; }
cd "$src"
exec "$src/tests/nested/run" --timeout "${RZ_NESTED_TIMEOUT:-1700}" -- \
  "$src/tests/linux/devices_in_host.sh" "$build/ringzero" "$build/tests/linux/guest-tools" "$RZKIT_DIR" "$@"
