#!/bin/bash
# The nested host starts and offers a hardware-assisted /dev/kvm (kvm_amd or
# kvm_intel), the caller's working directory, writable /tmp and /run, /dev/net/tun.
source "$(dirname "$0")/testlib.sh"
cd "$src" || fail "cannot cd to $src"
echo "prepared on the host" >"$tmp/host-file"
mkdir "$tmp/rw"
t0=$(now)
out=$("$run" --rw "$tmp/rw" -- sh -c '
  for m in kvm_amd kvm_intel; do [ -d /sys/module/$m ] && echo "module=$m"; done
  [ -c /dev/kvm ] && echo "dev_kvm=yes"
  [ -c /dev/net/tun ] && echo "tun=yes"
  echo "cwd=$(pwd)"
  echo x >/tmp/rz-probe && echo "tmp=writable"
  echo x >/run/rz-probe && echo "run=writable"
  [ -x /bin/sh ] && echo "root=shared"
  echo "host_tmp=$(cat "$1/host-file")"
  echo "written inside" >"$1/rw/out" && echo "rw=ok"
  echo "not kept" >"$1/lost" && echo "tmp_write=ok"
' sh "$tmp") || fail "tests/nested/run exited with $? (stdout: $out)"
echo "$out"
echo "nested host run took $(since "$t0") s"
expect_match "hardware-assisted KVM module" '^module=kvm_(amd|intel)$' "$out"
expect_match "/dev/kvm exists" '^dev_kvm=yes$' "$out"
expect_match "/dev/net/tun exists" '^tun=yes$' "$out"
expect_match "same working directory" "^cwd=$src\$" "$out"
expect_match "/tmp is writable" '^tmp=writable$' "$out"
expect_match "/run is writable" '^run=writable$' "$out"
expect_match "the host's /tmp is visible" '^host_tmp=prepared on the host$' "$out"
expect_match "--rw directory is writable inside" '^rw=ok$' "$out"
expect_eq "--rw directory's file arrives on the host" "written inside" "$(cat "$tmp/rw/out" 2>&1)"
[ -e "$tmp/lost" ] && fail "a file written to /tmp inside appeared on the host"
echo "ok: /tmp writes stay inside"
echo "PASS"
