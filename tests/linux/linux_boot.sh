#!/bin/bash
# CTest entry: boots Debian's kernel with ringzero where /dev/kvm is
# hardware-assisted (the nested test host here). Usage: linux_boot.sh SRC BUILD [case...]
set -u
src=$1 build=$2
shift 2
eval "$("$src/tests/kit/build")" || { echo "linux_boot: guest kit build failed"; exit 1; }
cd "$src"
exec "$src/tests/nested/run" -- "$src/tests/linux/in_host.sh" "$build/ringzero" "$RZKIT_DIR" "$@"
