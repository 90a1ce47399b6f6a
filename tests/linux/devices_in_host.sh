#!/bin/bash
# Runs inside a host with a hardware-assisted /dev/kvm (the nested test host,
# or this machine when it is one): boots Debian's cloud kernel from the guest
# kit with ringzero's virtio devices and checks, from both sides, what went
# through them. Usage:
#   devices_in_host.sh RINGZERO TOOLS_DIR KIT_DIR [case...]
# TOOLS_DIR holds the static rz-sock and rz-blk (tests/linux/guest-tools, built
# by CMake); they go into the guest with rz-devtest in an extra cpio archive
# appended to the kit's initramfs. Cases (default: all):
#   blk-sync blk-io_uring  three disks: the kit's ext4 image readonly=on (the
#           guest checks it and fails to write it; the image stays unchanged),
#           a copy of pattern.raw (the guest writes, zeroes and discards ranges;
#           the host finds exactly that in the file) and an empty ext4 (the
#           guest writes a file; e2fsck and debugfs on the host find it);
#           blk-sync also checks that a second ringzero cannot open a writable
#           disk that is in use.
#   rng     64 KiB from /dev/hwrng twice: virtio_rng is the current rng, the
#           data is not constant and differs between reads.
#   net     TAP rztap0 (169.254.77.1/24) <-> guest eth0 (169.254.77.2/24):
#           MAC, ping, full-size ping, 4 MiB each way over TCP on a
#           guest-initiated and on a host-initiated connection, with sha256.
#   vsock   guest CID 3 on a Unix socket: host-initiated (CONNECT 5000) and
#           guest-initiated (CID 2 port 6000 -> <socket>_6000) connections,
#           4 MiB each way with sha256; a connection to a port nobody listens
#           on is refused.
# RZ_DEVTEST_VMM=qemu boots the same guests with QEMU's virtio devices instead
# (to check the test itself; QEMU here has no vsock). Prints one line per check
# and "N passed, N failed" at the end; exits non-zero on any failure.
set -u
export PATH=$PATH:/usr/sbin:/sbin

# The deterministic data (rz-sock pattern SEED BYTES) the cases move around, as
# SEED:BYTES (must match guest-tools/rz-devtest).
patterns="11:1048576 12:262144 21:4194304 22:4194304 23:4194304 24:4194304
  31:4194304 32:4194304 33:4194304 34:4194304"
# devices_in_host.sh --pattern-shas RZ_SOCK prints "SEED BYTES SHA256" for each
# of them: the ctest entry computes this table before entering the nested host,
# where hashing runs at TCG speed, and passes it in RZ_DEVTEST_SHAS.
if [ "${1:-}" = --pattern-shas ]; then
  for p in $patterns; do
    echo "${p%:*} ${p#*:} $("$2" pattern "${p%:*}" "${p#*:}" | sha256sum | cut -d' ' -f1)"
  done
  exit 0
fi

rz=$1 tools=$2 kit=$3
shift 3
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(blk-sync blk-io_uring rng net vsock)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vmm=${RZ_DEVTEST_VMM:-ringzero}
boot_timeout=${RZ_DEVTEST_BOOT_TIMEOUT:-480}
pass=0 fail=0
work=$(mktemp -d /tmp/rz-devices.XXXXXX)
declare -a bg_pids=()
declare -A vm_pid=() vm_t0=() rzv=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  ip link del rztap0 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }
note() { echo "     $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck source=/dev/null
source "$kit/env" || { echo "FAIL no kit environment in $kit"; exit 1; }
for f in "$tools/rz-sock" "$tools/rz-blk" "$here/guest-tools/rz-devtest"; do
  [ -x "$f" ] || { echo "FAIL missing $f (build the target rz_guest_tools)"; exit 1; }
done
pat() { "$tools/rz-sock" pattern "$@"; }
# pat_sha SEED BYTES: the pattern's sha256 (from RZ_DEVTEST_SHAS when given).
pat_sha() {
  local h=""
  [ -n "${RZ_DEVTEST_SHAS:-}" ] && h=$(awk -v s="$1" -v b="$2" '$1 == s && $2 == b { print $3; exit }' "$RZ_DEVTEST_SHAS" 2>/dev/null)
  [ -n "$h" ] || h=$(pat "$1" "$2" | sha256sum | cut -d' ' -f1)
  echo "$h"
}

# The guest's initramfs: the kit's, then an archive with the test tools.
mkdir -p "$work/extra/bin"
cp "$tools/rz-sock" "$tools/rz-blk" "$here/guest-tools/rz-devtest" "$work/extra/bin/"
chmod 755 "$work/extra/bin/"*
(cd "$work/extra" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$work/extra.cpio" ||
  { echo "FAIL cpio failed"; exit 1; }
cat "$kit/initrd.img" "$work/extra.cpio" >"$work/initrd.img"

# --- starting and ending a guest -------------------------------------------
# Device specs, translated for the VMM:
#   disk:ro|rw:FILE:ENGINE:SERIAL  net:TAP:MAC  rng  vsock:CID:PATH
vmm_args() {
  local spec i=0 mode file engine serial aio
  for spec in "$@"; do
    case $spec in
      disk:*)
        IFS=: read -r _ mode file engine serial <<<"$spec"
        if [ "$vmm" = qemu ]; then
          aio=threads
          [ "$engine" = io_uring ] && aio=io_uring
          echo "-drive"
          echo "file=$file,if=none,id=d$i,format=raw,aio=$aio$([ "$mode" = ro ] && echo ,readonly=on)"
          echo "-device"
          echo "virtio-blk-pci,drive=d$i,serial=$serial"
        else
          echo "--disk"
          echo "path=$file,engine=$engine,serial=$serial$([ "$mode" = ro ] && echo ,readonly=on)"
        fi
        i=$((i + 1)) ;;
      net:*)
        tap=${spec#net:}
        mac=${tap#*:}
        tap=${tap%%:*}
        if [ "$vmm" = qemu ]; then
          printf '%s\n' -netdev "tap,id=n$i,ifname=$tap,script=no,downscript=no,vhost=off" \
            -device "virtio-net-pci,netdev=n$i,mac=$mac"
        else
          printf '%s\n' --net "tap=$tap,mac=$mac"
        fi
        i=$((i + 1)) ;;
      rng)
        if [ "$vmm" = qemu ]; then printf '%s\n' -device virtio-rng-pci; else echo --rng; fi ;;
      vsock:*)
        local rest=${spec#vsock:}
        if [ "$vmm" = qemu ]; then
          printf '%s\n' -device "vhost-vsock-pci,guest-cid=${rest%%:*}"
        else
          printf '%s\n' --vsock "cid=${rest%%:*},socket=${rest#*:}"
        fi ;;
      *) echo "devices_in_host: bad device spec $spec" >&2; return 1 ;;
    esac
  done
}

# vmm_start NAME GUEST_CASE DEVICE_SPEC...: boots in the background; the console
# goes to $work/NAME.out, the VMM's stderr to $work/NAME.err.
vmm_start() {
  local name=$1 gcase=$2 cmdline
  shift 2
  local -a dev=()
  local args
  args=$(vmm_args "$@") || return 1
  [ -n "$args" ] && mapfile -t dev <<<"$args"
  cmdline="console=ttyS0 panic=-1 quiet rz.case=$name rzkit.cmd=$(printf 'rz-devtest %s\n' "$gcase" | base64 -w0)"
  local -a cmd
  if [ "$vmm" = qemu ]; then
    cmd=(qemu-system-x86_64 -M q35 -accel kvm -cpu host -smp 2 -m 256 -nodefaults -no-user-config
      -display none -serial stdio -no-reboot -kernel "$kit/vmlinuz" -initrd "$work/initrd.img"
      -append "$cmdline" "${dev[@]}")
  else
    cmd=("$rz" run --kernel "$kit/vmlinuz" --initrd "$work/initrd.img" --cmdline "$cmdline"
      --cpus 2 --memory 256M "${dev[@]}")
  fi
  printf '%q ' "${cmd[@]}" >"$work/$name.cmd"
  note "$name: starting $vmm after $(since "$case_t0") s of preparation"
  vm_t0[$name]=$(now)
  timeout --kill-after=10 "$boot_timeout" "${cmd[@]}" </dev/null >"$work/$name.out" 2>"$work/$name.err" &
  vm_pid[$name]=$!
}

# vmm_wait NAME: waits for the VMM; leaves $work/NAME.log (console, \r removed)
# and $work/NAME.status.
vmm_wait() {
  local name=$1 st
  wait "${vm_pid[$name]}"
  st=$?
  echo $st >"$work/$name.status"
  vm_end=$(now)
  tr -d '\r' <"$work/$name.out" >"$work/$name.log"
  load_rzv "$name"
  note "$name: $vmm exited $st after $(since "${vm_t0[$name]}") s"
}

# wait_line NAME PATTERN: waits until the console shows PATTERN or the VMM ends.
wait_line() {
  local name=$1 pattern=$2 pid=${vm_pid[$1]}
  while kill -0 "$pid" 2>/dev/null; do
    grep -aq "$pattern" "$work/$name.out" 2>/dev/null && return 0
    sleep 1
  done
  grep -aq "$pattern" "$work/$name.out" 2>/dev/null
}

show() {
  echo "---- $1: command: $(cat "$work/$1.cmd")"
  echo "---- $1: console (last 40 lines):"; tail -40 "$work/$1.log" | sed 's/^/     | /'
  echo "---- $1: stderr (last 20 lines):"; tail -20 "$work/$1.err" | sed 's/^/     | /'
}

# val NAME KEY: the value of the guest's first "RZV KEY=value" line (read once
# by vmm_wait in plain bash: each process started costs a lot at TCG speed).
val() { echo "${rzv[$1|$2]:-}"; }
load_rzv() {
  local line kv
  while IFS= read -r line; do
    case $line in
      "RZV "*=*)
        kv=${line#RZV }
        [ -n "${rzv[$1|${kv%%=*}]+set}" ] || rzv[$1|${kv%%=*}]=${kv#*=} ;;
    esac
  done <"$work/$1.log"
}

# check_eq NAME KEY EXPECTED DESCRIPTION
check_eq() {
  local got
  got=$(val "$1" "$2")
  if [ "$got" = "$3" ]; then ok "$1: $4"; else bad "$1: $4: $2='$got', expected '$3'"; fi
}
# check_status0 NAME KEY DESCRIPTION: the value's first word is 0.
check_status0() {
  local got
  got=$(val "$1" "$2")
  if [ "${got%% *}" = 0 ]; then ok "$1: $3"; else bad "$1: $3: $2='$got'"; fi
}
# check_failed NAME KEY DESCRIPTION: the value's first word is a non-zero status.
check_failed() {
  local got
  got=$(val "$1" "$2")
  case ${got%% *} in
    ''|0|*[!0-9]*) bad "$1: $3: $2='$got' (wanted a failure status)" ;;
    *) ok "$1: $3 (${got})" ;;
  esac
}
# check_ge NAME KEY MIN DESCRIPTION
check_ge() {
  local got
  got=$(val "$1" "$2")
  if [[ $got =~ ^[0-9]+$ ]] && [ "$got" -ge "$3" ]; then ok "$1: $4 ($2=$got)"; else bad "$1: $4: $2='$got', wanted >= $3"; fi
}

# check_boot NAME GUEST_CASE VIRTIO_COUNTS: the guest came up with the expected
# devices, ran the case to its end and powered off; the VMM exited 0.
check_boot() {
  local name=$1 gcase=$2 virtio=$3 line st before=$fail
  st=$(cat "$work/$name.status")
  line=$(grep -a '^RZKIT-READY' "$work/$name.log" | head -1)
  if [ -z "$line" ]; then
    bad "$name: no RZKIT-READY marker (the guest did not reach its /init)"
  else
    case $line in
      *" virtio=$virtio "*) ok "$name: guest sees virtio=$virtio" ;;
      *) bad "$name: guest sees $(echo "$line" | grep -o 'virtio=[^ ]*') $(echo "$line" | grep -o 'virtio_bound=[^ ]*'), expected virtio=$virtio" ;;
    esac
  fi
  grep -aq "^RZG done $gcase\$" "$work/$name.log" && ok "$name: guest ran the $gcase checks to the end" ||
    bad "$name: guest did not finish the $gcase checks"
  grep -aq '^RZKIT-CMD-EXIT 0$' "$work/$name.log" && ok "$name: guest command exited 0" ||
    bad "$name: guest command: $(grep -a '^RZKIT-CMD-EXIT' "$work/$name.log" || echo 'no RZKIT-CMD-EXIT line')"
  if [ "$st" = 0 ]; then
    ok "$name: $vmm exited 0"
  else
    bad "$name: $vmm exited $st (124: timed out after $boot_timeout s)"
  fi
  if [ "$vmm" = ringzero ]; then
    if grep -q 'guest powered off' "$work/$name.err"; then ok "$name: ringzero reports the power-off"; else bad "$name: ringzero did not report 'guest powered off'"; fi
    # A sanitizer build (-DRZ_SANITIZE=ON) reports here.
    if grep -Eq 'Sanitizer|runtime error:' "$work/$name.err"; then
      bad "$name: sanitizer report: $(grep -Em3 'Sanitizer|runtime error:' "$work/$name.err" | tr '\n' ' ')"
    fi
  fi
  grep -a 'RZKIT-WARN' "$work/$name.log" | sed 's/^/     guest warning: /'
  [ "$fail" -gt "$before" ] && show "$name"
}

# --- blk ----------------------------------------------------------------------
case_blk() {
  local engine=$1 name=blk-$1 ro rw fs exp before
  ro=$work/ro-$engine.ext4 rw=$work/rw-$engine.raw fs=$work/fs-$engine.ext4
  cp "$RZKIT_EXT4_DISK" "$ro" && cp "$RZKIT_PATTERN_DISK" "$rw" && chmod 644 "$ro" "$rw" &&
    mkfs.ext4 -q -F -L rzfs "$fs" 16M || { bad "$name: preparing the disk images failed"; return; }
  before=$fail
  vmm_start "$name" blk "disk:ro:$ro:$engine:rzro" "disk:rw:$rw:$engine:rzraw" "disk:rw:$fs:$engine:rzfs"

  if [ "$vmm" = ringzero ] && [ "$engine" = sync ]; then
    # While the first one runs, a second ringzero must not get the writable disk.
    sleep 5
    local t1 st2
    t1=$(now)
    timeout --kill-after=5 60 "$rz" run --kernel "$kit/vmlinuz" --initrd "$kit/initrd.img" \
      --cmdline "console=ttyS0 quiet" --memory 64M --disk "path=$rw" </dev/null >"$work/lock.out" 2>"$work/lock.err"
    st2=$?
    if [ "$st2" != 0 ] && [ "$st2" != 124 ] && grep -q 'in use' "$work/lock.err"; then
      ok "$name: a second ringzero cannot open the disk in use (exit $st2 after $(since "$t1") s: $(head -1 "$work/lock.err"))"
    else
      bad "$name: second ringzero on the disk in use exited $st2; stderr: $(head -3 "$work/lock.err" | tr '\n' ' ')"
    fi
  fi
  vmm_wait "$name"
  check_boot "$name" blk "blk:3,net:0,console:0,rng:0,vsock:0 virtio_bound=3"

  # What the guest saw.
  check_eq "$name" vda_serial rzro "serial of vda (GET_ID)"
  check_eq "$name" vdb_serial rzraw "serial of vdb"
  check_eq "$name" vda_sectors 65536 "vda has 65536 sectors"
  check_eq "$name" vdb_sectors 32768 "vdb has 32768 sectors"
  check_eq "$name" vdc_sectors 32768 "vdc has 32768 sectors"
  check_eq "$name" vda_ro 1 "the readonly=on disk is read-only in the guest"
  check_eq "$name" vdb_ro 0 "the writable disk is writable in the guest"
  check_eq "$name" vdb_hw_queues 2 "vdb has a request queue per vCPU (2, virtio-blk MQ)"
  check_eq "$name" vda_sha256 "$RZKIT_EXT4_SHA256" "sha256 of the whole read-only disk"
  check_status0 "$name" vda_mount "the read-only ext4 disk mounts"
  local h f
  while read -r h f; do
    check_eq "$name" "file_$f" "$h" "sha256 of $f on the read-only ext4 disk"
  done <"$RZKIT_DIR/disks/ext4.files.sha256"
  check_failed "$name" vda_write "a write to the read-only disk fails"
  check_failed "$name" vda_write_direct "an O_DIRECT write to the read-only disk fails"
  local p11 p12 z1m
  pat 11 1048576 >"$work/p11"
  pat 12 262144 >"$work/p12"
  p11=$(pat_sha 11 1048576) p12=$(pat_sha 12 262144)
  z1m=30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58  # sha256 of 1 MiB of zeroes
  check_status0 "$name" vdb_write "1 MiB written to the raw disk (buffered, fsync)"
  check_status0 "$name" vdb_write_direct "256 KiB written to the raw disk with O_DIRECT"
  check_status0 "$name" vdb_zeroout "BLKZEROOUT on 1 MiB"
  local dmax
  dmax=$(val "$name" vdb_discard_max)
  if [ -n "$dmax" ] && [ "$dmax" != 0 ]; then
    check_status0 "$name" vdb_discard "BLKDISCARD on 1 MiB (discard_max_bytes=$dmax)"
  else
    bad "$name: the writable disk offers no discard (discard_max_bytes='$dmax')"
  fi
  note "$name: write_zeroes_max_bytes=$(val "$name" vdb_write_zeroes_max) write_cache=$(val "$name" vdb_cache)"
  check_status0 "$name" vdb_flush "fsync of the raw disk"
  check_eq "$name" vdb_readback_p11 "$p11" "guest reads back the buffered write (O_DIRECT)"
  check_eq "$name" vdb_readback_p12 "$p12" "guest reads back the O_DIRECT write"
  check_eq "$name" vdb_readback_zero "$z1m" "guest reads zeroes back from the zeroed range"
  check_eq "$name" vdb_sector_100 "RZKIT-PATTERN sector 0000000100" "an untouched sector reads back unchanged"
  check_status0 "$name" vdc_mount "the empty ext4 disk mounts read-write"
  check_status0 "$name" vdc_write "a file is written to it"
  check_status0 "$name" vdc_umount "it unmounts"

  # What the host finds in the image files after ringzero exited.
  # (cmp rather than sha256sum: hashing is slow at TCG speed)
  local got
  if cmp -s "$RZKIT_EXT4_DISK" "$ro"; then
    ok "$name: the read-only image is unchanged"
  else
    bad "$name: the read-only image changed: $(cmp "$RZKIT_EXT4_DISK" "$ro" 2>&1 | head -1); differing bytes: $(cmp -l "$RZKIT_EXT4_DISK" "$ro" 2>/dev/null | wc -l)"
  fi
  exp=$work/expected-$engine.raw
  cp "$RZKIT_PATTERN_DISK" "$exp"
  dd if="$work/p11" of="$exp" bs=65536 seek=48 conv=notrunc status=none
  dd if="$work/p12" of="$exp" bs=65536 seek=80 conv=notrunc status=none
  dd if=/dev/zero of="$exp" bs=65536 seek=128 count=16 conv=notrunc status=none
  cp "$exp" "$exp.keep"
  dd if=/dev/zero of="$exp" bs=65536 seek=192 count=16 conv=notrunc status=none
  if cmp -s "$exp" "$rw"; then
    ok "$name: the raw image holds exactly the guest's writes and zeroes (discarded range reads as zeroes)"
  elif cmp -s "$exp.keep" "$rw"; then
    ok "$name: the raw image holds exactly the guest's writes and zeroes (discarded range kept its data)"
  else
    bad "$name: the raw image differs from the expected one: $(cmp "$exp" "$rw" 2>&1 | head -1); differing bytes: $(cmp -l "$exp" "$rw" 2>/dev/null | wc -l)"
  fi
  local fsck
  fsck=$(e2fsck -fn "$fs" 2>&1)
  [ $? = 0 ] && ok "$name: e2fsck finds the guest-written ext4 clean" ||
    bad "$name: e2fsck on the guest-written ext4: $(echo "$fsck" | tail -5 | tr '\n' ' ')"
  rm -f "$work/data.bin"
  debugfs -R "dump /data.bin $work/data.bin" "$fs" >/dev/null 2>&1
  if cmp -s "$work/p11" "$work/data.bin"; then
    ok "$name: the host finds the guest's file on the ext4 disk (same content)"
  else
    bad "$name: the guest's file on the ext4 disk differs: $(cmp "$work/p11" "$work/data.bin" 2>&1 | head -1)"
  fi
  got=$(debugfs -R "cat /d/note.txt" "$fs" 2>/dev/null)
  [ "$got" = "written by the guest" ] && ok "$name: the host reads d/note.txt" ||
    bad "$name: d/note.txt holds '$got'"
  [ "$fail" -gt "$before" ] && grep -a '^RZV' "$work/$name.log" | sed 's/^/     guest: /'
}

# --- rng ----------------------------------------------------------------------
case_rng() {
  local name=rng before=$fail
  vmm_start "$name" rng rng
  vmm_wait "$name"
  check_boot "$name" rng "blk:0,net:0,console:0,rng:1,vsock:0 virtio_bound=1"
  local cur
  cur=$(val "$name" rng_current)
  case $cur in
    virtio_rng*) ok "$name: the current hw_random source is $cur" ;;
    *) bad "$name: rng_current='$cur' (available: '$(val "$name" rng_available)')" ;;
  esac
  local r
  for r in r1 r2; do
    check_status0 "$name" ${r}_dd "read $r from /dev/hwrng"
    check_eq "$name" ${r}_bytes 65536 "$r has 64 KiB"
    check_ge "$name" ${r}_nonzero_bytes 64000 "$r is not mostly zero bytes"
    check_ge "$name" ${r}_gzip_bytes 65000 "$r does not compress"
    check_eq "$name" ${r}_distinct_values 256 "$r holds all 256 byte values"
  done
  local s1 s2
  s1=$(val "$name" r1_sha256) s2=$(val "$name" r2_sha256)
  [ -n "$s1" ] && [ "$s1" != "$s2" ] && ok "$name: two reads differ" || bad "$name: two reads are equal or missing ($s1 / $s2)"
  [ "$fail" -gt "$before" ] && grep -a '^RZV' "$work/$name.log" | sed 's/^/     guest: /'
}

# check_transfer NAME KEY PID HOST_ERR RECV SEND_SEED RECV_SEED WHAT: one
# connection that carried 4 MiB each way. KEY is the guest's prefix
# (KEY_status, KEY_log, KEY_recv_sha256); PID the host-side rz-sock, which
# received into RECV what the guest sent (pattern SEND_SEED), while the guest
# received pattern RECV_SEED.
check_transfer() {
  local name=$1 key=$2 pid=$3 herr=$4 recv=$5 gseed=$6 hseed=$7 what=$8 st
  kill -0 "$pid" 2>/dev/null && { sleep 5; kill "$pid" 2>/dev/null; }
  wait "$pid"
  st=$?
  check_status0 "$name" "${key}_status" "$what: guest side ($(val "$name" "${key}_log"))"
  check_eq "$name" "${key}_recv_sha256" "$(pat_sha "$hseed" 4194304)" "$what: host -> guest 4 MiB, sha256"
  pat "$gseed" 4194304 >"$work/expected.bin"
  if [ "$st" = 0 ] && cmp -s "$work/expected.bin" "$recv"; then
    ok "$name: $what: guest -> host 4 MiB, same bytes ($(cat "$herr"))"
  else
    bad "$name: $what: guest -> host: host side exited $st, got $(wc -c <"$recv") bytes, $(cmp "$work/expected.bin" "$recv" 2>&1 | head -1); $(cat "$herr")"
  fi
}

# --- net ----------------------------------------------------------------------
case_net() {
  local name=net before=$fail mac=06:00:ac:10:00:02
  ip link del rztap0 2>/dev/null
  if ! { ip tuntap add dev rztap0 mode tap && ip addr add 169.254.77.1/24 dev rztap0 && ip link set rztap0 up; }; then
    bad "$name: cannot create the TAP device rztap0"
    return
  fi
  pat 22 4194304 >"$work/p22"
  pat 24 4194304 >"$work/p24"
  # Port 5000: the guest connects here, sends pattern 21 and receives pattern 22.
  # The host ends its stream only after the guest's (-l): the guest stops when it
  # has both, so nothing it sent can still be in its socket buffer at power-off.
  "$tools/rz-sock" -l -t "$boot_timeout" tcp-listen 5000 <"$work/p22" >"$work/recv5000" 2>"$work/host5000.err" &
  local l5000=$!
  bg_pids+=("$l5000")
  vmm_start "$name" net "net:rztap0:$mac"
  # Port 5001: the host connects to the guest once it listens.
  local c5001=""
  if wait_line "$name" '^RZG net-listening'; then
    "$tools/rz-sock" -l -t 600 -r 120 tcp-connect 169.254.77.2 5001 <"$work/p24" >"$work/recv5001" 2>"$work/host5001.err" &
    c5001=$!
    bg_pids+=("$c5001")
  fi
  vmm_wait "$name"
  check_boot "$name" net "blk:0,net:1,console:0,rng:0,vsock:0 virtio_bound=1"
  check_eq "$name" eth0_mac "$mac" "eth0 has the MAC given to --net"
  check_eq "$name" eth0_driver virtio_net "eth0 is driven by virtio_net"
  check_status0 "$name" eth0_setup "eth0 configured"
  check_status0 "$name" ping_status "the guest pings the host ($(val "$name" ping_summary))"
  check_eq "$name" ping_summary "3 packets transmitted, 3 packets received, 0% packet loss" "no ping lost"
  check_status0 "$name" ping_big_status "1500-byte frames ($(val "$name" ping_big_summary))"
  check_transfer "$name" tcp5000 "$l5000" "$work/host5000.err" "$work/recv5000" 21 22 \
    "guest-initiated TCP connection to port 5000"
  if [ -n "$c5001" ]; then
    check_transfer "$name" tcp5001 "$c5001" "$work/host5001.err" "$work/recv5001" 23 24 \
      "host-initiated TCP connection to port 5001"
  else
    bad "$name: the guest never said it listens on port 5001"
  fi
  note "$name: guest $(val "$name" eth0_stats) $(val "$name" tcp_stats)"
  note "$name: host $(awk '/^Tcp:/ { if (!h) { for (i = 2; i <= NF; i++) n[i] = $i; h = 1 } else
    for (i = 2; i <= NF; i++) if (n[i] ~ /^(OutSegs|RetransSegs|InErrs|InCsumErrors)$/) printf "%s=%s ", n[i], $i }' /proc/net/snmp)"
  note "$name: host rztap0 $(ip -s -o link show rztap0 2>/dev/null | tr -s ' ' | cut -c1-300)"
  [ "$fail" -gt "$before" ] && grep -a '^RZV' "$work/$name.log" | sed 's/^/     guest: /'
  ip link del rztap0 2>/dev/null
}

# --- vsock --------------------------------------------------------------------
case_vsock() {
  local name=vsock before=$fail sock=$work/rz.vsock
  if [ "$vmm" = qemu ]; then
    note "vsock: skipped (QEMU has no vhost-vsock here)"
    return
  fi
  pat 32 4194304 >"$work/p32"
  pat 34 4194304 >"$work/p34"
  # Guest-initiated: CID 2 port 6000 arrives at <socket>_6000.
  "$tools/rz-sock" -l -t "$boot_timeout" uds-listen "${sock}_6000" <"$work/p34" >"$work/recv6000" 2>"$work/host6000.err" &
  local l6000=$!
  bg_pids+=("$l6000")
  vmm_start "$name" vsock "vsock:3:$sock"
  local c5000=""
  if wait_line "$name" '^RZG vsock-listening'; then
    "$tools/rz-sock" -l -t 600 -r 120 uds-connect "$sock" 5000 <"$work/p32" >"$work/recv5000" 2>"$work/host5000.err" &
    c5000=$!
    bg_pids+=("$c5000")
  fi
  vmm_wait "$name"
  check_boot "$name" vsock "blk:0,net:0,console:0,rng:0,vsock:1 virtio_bound=1"
  check_eq "$name" vsock_cid 3 "the guest's CID is 3"
  check_transfer "$name" vsock6000 "$l6000" "$work/host6000.err" "$work/recv6000" 33 34 \
    "guest-initiated connection to CID 2 port 6000"
  if [ -n "$c5000" ]; then
    check_transfer "$name" vsock5000 "$c5000" "$work/host5000.err" "$work/recv5000" 31 32 \
      "host-initiated connection (CONNECT 5000)"
    grep -q 'host_port [0-9][0-9]*' "$work/host5000.err" && ok "$name: CONNECT 5000 answered 'OK <port>'" ||
      bad "$name: no 'OK <port>' answer to CONNECT 5000: $(cat "$work/host5000.err")"
  else
    bad "$name: the guest never said it listens on port 5000"
  fi
  check_failed "$name" vsock6001_status "a connection to host port 6001 (no listener) is refused"
  [ "$fail" -gt "$before" ] && grep -a '^RZV' "$work/$name.log" | sed 's/^/     guest: /'
}

for c in "${cases[@]}"; do
  case_t0=$(now) vm_end=""
  case $c in
    blk-sync) case_blk sync ;;
    blk-io_uring) case_blk io_uring ;;
    rng) case_rng ;;
    net) case_net ;;
    vsock) case_vsock ;;
    *) bad "unknown case $c" ;;
  esac
  note "case $c took $(since "$case_t0") s${vm_end:+ (checks after the VMM ended: $(since "$vm_end") s)}"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
