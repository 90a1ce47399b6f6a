#!/bin/bash
# Runs inside a host with a hardware-assisted /dev/kvm (the nested test host,
# or this machine when it is one): boots Debian's cloud kernel from the guest
# kit with ringzero in several configurations and checks what the guest saw
# and how ringzero ended. Usage: in_host.sh RINGZERO_BINARY KIT_DIR [case...]
# Cases: cpus1 cpus2 reboot panic (default: all). Prints one line per check
# and "N passed, N failed" at the end; exits non-zero on any failure.
set -u
rz=$1 kit=$2
shift 2
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(cpus1 cpus2 reboot panic)
pass=0 fail=0
work=$(mktemp -d /tmp/rz-linux.XXXXXX)
trap 'rm -rf "$work"' EXIT

ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

# boot NAME CPUS MEM_MIB EXTRA_CMDLINE: runs ringzero, leaves $work/NAME.{out,err,status}
boot() {
  local name=$1 cpus=$2 mem=$3 extra=$4 t0 t1
  t0=$(date +%s.%N)
  timeout 420 "$rz" run --kernel "$kit/vmlinuz" --initrd "$kit/initrd.img" \
    --cmdline "console=ttyS0 panic=-1 rz.case=$name $extra" --cpus "$cpus" --memory "${mem}M" \
    </dev/null >"$work/$name.out" 2>"$work/$name.err"
  echo $? >"$work/$name.status"
  t1=$(date +%s.%N)
  echo "     $name: ringzero exited $(cat "$work/$name.status") after $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
}

show() {
  echo "---- $1 stdout (last 30 lines):"; tail -30 "$work/$1.out"
  echo "---- $1 stderr:"; cat "$work/$1.err"
}

field() { sed -n "s/.*RZKIT-READY.* $2=\([^ ]*\).*/\1/p" "$work/$1.out" | head -1; }

check_ready() {  # NAME CPUS MEM_MIB
  local name=$1 cpus=$2 mem=$3 line got_cpus got_mem
  line=$(grep -a "RZKIT-READY" "$work/$name.out" | head -1)
  if [ -z "$line" ]; then bad "$name: no RZKIT-READY marker"; show "$name"; return; fi
  got_cpus=$(field "$name" cpus)
  got_mem=$(field "$name" memtotal_kb)
  [ "$got_cpus" = "$cpus" ] && ok "$name: guest sees $got_cpus CPUs" || bad "$name: guest sees '$got_cpus' CPUs, expected $cpus"
  # MemTotal is RAM minus what the kernel keeps for itself: between 80% and 100%.
  if [ -n "$got_mem" ] && [ "$got_mem" -le $((mem * 1024)) ] && [ "$got_mem" -ge $((mem * 1024 * 8 / 10)) ]; then
    ok "$name: MemTotal $got_mem kB for ${mem} MiB"
  else
    bad "$name: MemTotal '$got_mem' kB does not fit ${mem} MiB"
  fi
  case $line in
    *"rz.case=$name"*) ok "$name: guest got the command line" ;;
    *) bad "$name: command line not seen by the guest: $line" ;;
  esac
}

check_exit() {  # NAME STATUS STDERR_PATTERN
  local name=$1 want=$2 pattern=$3 got
  got=$(cat "$work/$name.status")
  if [ "$got" = "$want" ] && grep -q "$pattern" "$work/$name.err"; then
    ok "$name: ringzero exited $got with '$pattern'"
  else
    bad "$name: ringzero exited $got (wanted $want with '$pattern')"; show "$name"
  fi
}

for c in "${cases[@]}"; do
  case $c in
    cpus1) boot cpus1 1 256 "rzkit.end=poweroff"; check_ready cpus1 1 256; check_exit cpus1 0 "guest powered off" ;;
    cpus2) boot cpus2 2 512 "rzkit.end=poweroff"; check_ready cpus2 2 512; check_exit cpus2 0 "guest powered off" ;;
    reboot) boot reboot 1 256 "rzkit.end=reboot"; check_ready reboot 1 256; check_exit reboot 0 "reset" ;;
    panic) boot panic 2 256 "rzkit.end=panic"; check_ready panic 2 256; check_exit panic 3 "panic" ;;
    *) bad "unknown case $c" ;;
  esac
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
