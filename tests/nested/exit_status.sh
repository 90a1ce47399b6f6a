#!/bin/bash
# tests/nested/run returns the command's exit status and hands back its stdout and
# stderr exactly and separately; arguments and environment arrive intact.
source "$(dirname "$0")/testlib.sh"
cd "$src" || fail "cannot cd to $src"
# The command: output with special characters, a large output (checks that none
# is lost at the end), arguments, environment, and exit status 7.
script='
printf "line one\n\tsecond line with tab and \\\\ backslash\n"
printf "to stderr\n" >&2
seq 1 200000
printf "%s|" "$@"; echo
printf "env=%s|%s|%s\n" "$RZ_TEST_VAR" "$FOO" "${NOT_FORWARDED-unset}"
exit 7
'
check_main() {
  local mode=$1
  t0=$(now)
  RZ_NESTED=$mode RZ_TEST_VAR='a b $c "d"' NOT_FORWARDED=1 "$run" --env FOO=bar -- \
    sh -c "$script" sh "two words" "it's" '$HOME' '*' >"$tmp/out" 2>"$tmp/err"
  status=$?
  echo "[$mode] run took $(since "$t0") s"
  expect_eq "[$mode] exit status" 7 "$status"
  if ! cmp -s "$tmp/expected" "$tmp/out"; then
    diff "$tmp/expected" "$tmp/out" | head -20 >&2
    fail "[$mode] stdout differs from the expected output"
  fi
  echo "ok: [$mode] stdout exact ($(wc -c <"$tmp/out") bytes)"
  grep -v '^nested: ' "$tmp/err" >"$tmp/err.cmd"
  expect_eq "[$mode] stderr carries the command's stderr only" "to stderr" "$(cat "$tmp/err.cmd")"
  expect_eq "[$mode] one note from the tooling on stderr" 1 "$(grep -c '^nested: ' "$tmp/err")"
}
{
  printf 'line one\n\tsecond line with tab and \\ backslash\n'
  seq 1 200000
  printf '%s|' "two words" "it's" '$HOME' '*'; echo
  printf 'env=%s|%s|%s\n' 'a b $c "d"' bar unset
} >"$tmp/expected"
# RZ_NESTED=direct runs the command here: the path taken on hardware-assisted hosts.
check_main direct
check_main auto

# Status of a command that is not found, and of one killed by a signal.
"$run" -- sh -c 'nonexistent-command-rz; echo "status=$?"; kill -9 $$' >"$tmp/out2" 2>"$tmp/err2"
status=$?
expect_eq "signal death gives 128+9" 137 "$status"
expect_eq "command not found inside gives 127" "status=127" "$(cat "$tmp/out2")"
echo "PASS"
