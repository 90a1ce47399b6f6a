#!/bin/bash
# QEMU + KVM inside the nested host boots the guest kit: the marker line shows 2
# CPUs, the virtio disks and the rng; the guest reads the known disk contents; a
# guest-triggered panic ends the run as well.
source "$(dirname "$0")/testlib.sh"
cd "$src" || fail "cannot cd to $src"
kitenv=$("$src/tests/kit/build") || fail "tests/kit/build failed"
eval "$kitenv"

guest_cmd='sha256sum /dev/vda | cut -d" " -f1
dd if=/dev/vda bs=512 skip=12345 count=1 2>/dev/null | head -c 31; echo
echo "hwrng=$(head -c 32 /dev/hwrng | wc -c)"
mkdir -p /mnt && mount -t ext4 -o ro /dev/vdb /mnt && sha256sum /mnt/hello.txt | cut -d" " -f1'

# Two boots in one nested host: the checks above, then a panic (sysrq c).
t0=$(now)
"$run" -- sh -c '
  s=$(date +%s.%N)
  tests/kit/qemu-boot --disk "$1" --cmd "$2" >"$3/boot1.log" 2>&1
  echo "boot1_status=$?"
  e=$(date +%s.%N)
  echo "boot1_seconds=$(awk -v a=$s -v b=$e "BEGIN { printf \"%.2f\", b - a }")"
  tests/kit/qemu-boot --no-default-disk --no-rng --end panic --pvpanic >"$3/boot2.log" 2>&1
  echo "boot2_status=$?"
  cat "$3/boot1.log"
  echo ===== boot2
  cat "$3/boot2.log"
' sh "$RZKIT_EXT4_DISK" "$guest_cmd" /tmp >"$tmp/out" 2>"$tmp/err"
status=$?
# The guest's console ends lines with \r\n.
tr -d '\r' <"$tmp/out" >"$tmp/out.lf" && mv "$tmp/out.lf" "$tmp/out"
cat "$tmp/out"
echo "nested run (host boot + two guest boots) took $(since "$t0") s"
[ $status = 0 ] || { cat "$tmp/err" >&2; fail "tests/nested/run exited with $status"; }
out=$(cat "$tmp/out")
boot1=$(sed -n '/^boot1_seconds=/,/^===== boot2/p' "$tmp/out")
boot2=$(sed -n '/^===== boot2/,$p' "$tmp/out")
expect_match "first guest boot ended well" '^boot1_status=0$' "$out"
expect_match "marker line with 2 CPUs, 2 disks, 1 rng" \
  '^RZKIT-READY cpus=2 .*virtio=blk:2,net:0,console:0,rng:1,vsock:0 virtio_bound=3 disks=vda:32768,vdb:65536 ' "$boot1"
expect_match "raw disk sha256 is the recorded one" "^$RZKIT_PATTERN_SHA256\$" "$boot1"
expect_match "raw disk sector 12345" '^RZKIT-PATTERN sector 0000012345$' "$boot1"
expect_match "hwrng gives bytes" '^hwrng=32$' "$boot1"
expect_match "ext4 file sha256 is the recorded one" "^$RZKIT_HELLO_SHA256\$" "$boot1"
expect_match "command exit status" '^RZKIT-CMD-EXIT 0$' "$boot1"
expect_match "second guest boot ended (panic=-1 reboots, -no-reboot exits)" '^boot2_status=0$' "$out"
expect_match "marker line without devices" '^RZKIT-READY cpus=2 .*virtio=blk:0,net:0,console:0,rng:0,vsock:0 virtio_bound=0 disks=- ' "$boot2"
expect_match "guest panicked through sysrq" 'Kernel panic - not syncing: sysrq triggered crash' "$boot2"
echo "PASS"
