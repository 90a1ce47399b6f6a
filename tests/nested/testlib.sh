# Helpers for the tests/nested/*.sh CTest scripts (bash, sourced).
# Each script takes the source directory as $1 (default: two levels up).
set -u
src=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)
run="$src/tests/nested/run"
test_name=$(basename "$0" .sh)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rz-$test_name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "FAIL ($test_name): $*" >&2
  exit 1
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  if [ "$2" != "$3" ]; then
    echo "FAIL ($test_name): $1" >&2
    echo "  expected: $(printf '%q' "$2")" >&2
    echo "  actual:   $(printf '%q' "$3")" >&2
    exit 1
  fi
  echo "ok: $1"
}

# expect_match WHAT REGEX TEXT
expect_match() {
  if ! grep -Eq -- "$2" <<<"$3"; then
    echo "FAIL ($test_name): $1: no match for /$2/ in:" >&2
    sed 's/^/  | /' <<<"$3" >&2
    exit 1
  fi
  echo "ok: $1"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
