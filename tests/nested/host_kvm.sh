#!/bin/bash
# The nested host starts and offers a hardware-assisted /dev/kvm (kvm_amd or
# kvm_intel), the caller's working directory, writable /tmp and /run, /dev/net/tun.
source "$(dirname "$0")/testlib.sh"
cd "$src" || fail "cannot cd to $src"
t0=$(now)
out=$("$run" -- sh -c '
  for m in kvm_amd kvm_intel; do [ -d /sys/module/$m ] && echo "module=$m"; done
  [ -c /dev/kvm ] && echo "dev_kvm=yes"
  [ -c /dev/net/tun ] && echo "tun=yes"
  echo "cwd=$(pwd)"
  echo x >/tmp/rz-probe && echo "tmp=writable"
  echo x >/run/rz-probe && echo "run=writable"
  [ -x /bin/sh ] && echo "root=shared"
') || fail "tests/nested/run exited with $? (stdout: $out)"
echo "$out"
echo "nested host run took $(since "$t0") s"
expect_match "hardware-assisted KVM module" '^module=kvm_(amd|intel)$' "$out"
expect_match "/dev/kvm exists" '^dev_kvm=yes$' "$out"
expect_match "/dev/net/tun exists" '^tun=yes$' "$out"
expect_match "same working directory" "^cwd=$src\$" "$out"
expect_match "/tmp is writable" '^tmp=writable$' "$out"
expect_match "/run is writable" '^run=writable$' "$out"
echo "PASS"
