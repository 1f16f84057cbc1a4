#!/usr/bin/env bash
# Sanitizer run of the Cython core: AddressSanitizer + UBSan over the test
# suite, then a seeded differential fuzz against the pure-Python reference.
#
#   bench/sanitize.sh [--seconds N] [--seed S] [--working-tree] [--keep]
#
#   --seconds N      fuzz budget in seconds (default 60)
#   --seed S         fuzz master seed (default 1); a failing case prints the
#                    command that replays it
#   --working-tree   test the working tree as it is (tracked and untracked,
#                    not ignored files) instead of a clean clone of HEAD
#   --keep           keep the temporary directory (build, venv, logs)
#
# Environment: HYPOTHESIS_PROFILE (default dev; ci or large for more examples),
# PYTEST_ARGS (extra pytest arguments, e.g. "-x -k decode").
#
# What it does, in a fresh temporary directory:
#  1. clones the repository (or copies the working tree) and builds it into a
#     new venv with DTPROTO_DEBUG_BUILD=1 DTPROTO_REQUIRE_EXTENSIONS=1 and gcc:
#     -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined,
#     Cython boundscheck/initializedcheck (see setup.py);
#  2. checks the harness itself: a tiny C library built with the same flags
#     must produce an ASan and a UBSan report under the same settings;
#  3. runs the whole test suite under the sanitizers;
#  4. runs tests/stress_fuzz.py for the fuzz budget;
#  5. builds the ordinary optimized extension (-O3, no bounds checks) into a
#     second venv and runs the fuzz there too, for half the budget: the debug
#     build's Cython boundscheck turns an unchecked index into an IndexError,
#     so a read past a tuple shows only here (as a crash).
#
# CPython itself is not instrumented, so libasan is preloaded
# (LD_PRELOAD=$(gcc -print-file-name=libasan.so); the extension links
# libubsan itself) and PYTHONMALLOC=malloc sends every Python allocation
# through ASan's malloc, so that reads past a bytes/str/tuple object are caught.
# Leak detection stays off (detect_leaks=0): CPython keeps much of its memory
# until exit and LeakSanitizer would report it; leaks are checked by RSS
# instead (tests/test_memory.py, bench/leak_check.py).
#
# ASan reports go to log files (log_path) so that those of subprocesses (the
# CLI tests) are seen too; UBSan reports (gcc's handlers ignore log_path next
# to a preloaded libasan) go to stderr and stop the process with status 1.
# Exit status: 0 when the suite and the fuzz pass with no sanitizer report,
# 1 otherwise.
#
# Needs gcc with its sanitizer runtimes (Debian: gcc, which brings libasan and
# libubsan), python3 with venv, git, and PyPI for the test extra.
set -euo pipefail

seconds=60
seed=1
from_tree=0
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --working-tree) from_tree=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dtproto-sanitize.XXXXXX")
cleanup() {
  if [ "$keep" = 1 ]; then echo "kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

export CC=gcc   # the flags and the preloaded runtime below are gcc's
asan_rt=$(gcc -print-file-name=libasan.so)
if [ ! -e "$asan_rt" ]; then
  echo "gcc's AddressSanitizer runtime (libasan.so) is missing: install gcc's libasan" >&2
  exit 1
fi

src=$work/src
logs=$work/sanitizer-logs
mkdir -p "$logs"
if [ "$from_tree" = 1 ]; then
  echo "== copy of the working tree"
  mkdir -p "$src"
  (cd "$root" && git ls-files -z -c -o --exclude-standard | xargs -0 tar cf - 2>/dev/null) \
    | tar xf - -C "$src"
else
  echo "== clean clone of $(git -C "$root" rev-parse --short HEAD)"
  git clone -q --no-hardlinks "$root" "$src"
fi

echo "== debug build (ASan + UBSan + Cython bounds checks) into a fresh venv"
python3 -m venv "$work/v"
"$work/v/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
(cd "$src" && DTPROTO_DEBUG_BUILD=1 DTPROTO_REQUIRE_EXTENSIONS=1 \
  "$work/v/bin/pip" install -q ".[test]")
so=$(ls "$work"/v/lib/python3*/site-packages/dtproto/_codec_c*.so)
if ! ldd "$so" | grep libasan >/dev/null; then  # not -q: with pipefail, SIGPIPE to ldd fails the pipe
  echo "the installed extension is not an ASan build: $so" >&2
  exit 1
fi

# Every run below: the sanitizer runtime first, Python allocations visible to it.
san_env=(
  env
  LD_PRELOAD="$asan_rt"
  PYTHONMALLOC=malloc
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:log_path=$logs/asan"
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"
)
reports() {
  local found=0 f
  for f in "$logs"/*; do
    [ -e "$f" ] || continue
    found=1
    echo "---- sanitizer report $(basename "$f")"
    head -60 "$f"
  done
  return $found
}

(cd "$work" && "${san_env[@]}" "$work/v/bin/python" -c \
  "import dtproto; assert dtproto.IMPLEMENTATION == 'cython', dtproto.IMPLEMENTATION; print('implementation:', dtproto.IMPLEMENTATION)")

echo "== harness check: the sanitizers report and fail under these settings"
cat > "$work/canary.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
#include <limits.h>
/* through a volatile pointer: UBSan cannot know the size, ASan must catch it */
int heap_overflow(int n) {
  char *p = malloc(8); memset(p, 1, 8); char *volatile q = p; int v = q[n]; free(p); return v;
}
int int_overflow(int a) { return a + INT_MAX; }
EOF
gcc -O1 -g -fPIC -shared -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -o "$work/canary.so" "$work/canary.c"
canary_logs=$work/canary-logs
mkdir -p "$canary_logs"
for call in heap_overflow int_overflow; do
  if env LD_PRELOAD="$asan_rt" PYTHONMALLOC=malloc \
      ASAN_OPTIONS="detect_leaks=0:log_path=$canary_logs/asan" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$canary_logs/ubsan" \
      "$work/v/bin/python" -c "import ctypes; ctypes.CDLL('$work/canary.so').$call(8)" \
      2>"$canary_logs/stderr.$call"; then
    echo "harness check failed: $call ran without a sanitizer stopping it" >&2
    exit 1
  fi
done
# ASan writes to its log_path; gcc's UBSan handlers, next to a preloaded
# libasan, write to stderr (and with halt_on_error the process exits 1).
grep -rq "AddressSanitizer: heap-buffer-overflow" "$canary_logs" \
  && grep -rq "runtime error: signed integer overflow" "$canary_logs" \
  || { echo "harness check failed: no sanitizer report" >&2; exit 1; }
echo "ok: heap-buffer-overflow and signed integer overflow are reported"

status=0
echo "== test suite under ASan + UBSan (HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-dev})"
# shellcheck disable=SC2086
(cd "$src" && "${san_env[@]}" HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-dev}" \
  "$work/v/bin/pytest" -p no:cacheprovider -q ${PYTEST_ARGS:-}) || status=1
reports || { echo "sanitizer report(s) during the test suite" >&2; status=1; }

echo "== differential stress fuzz under ASan + UBSan (${seconds} s, seed $seed)"
(cd "$src" && "${san_env[@]}" "$work/v/bin/python" tests/stress_fuzz.py \
  --seconds "$seconds" --seed "$seed") || status=1
reports || { echo "sanitizer report(s) during the fuzz" >&2; status=1; }

echo "== the same fuzz against the optimized build (no bounds checks), $((seconds / 2)) s"
python3 -m venv "$work/opt"
"$work/opt/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
rm -rf "$src/build"
(cd "$src" && DTPROTO_REQUIRE_EXTENSIONS=1 "$work/opt/bin/pip" install -q ".[test]")
(cd "$src" && "$work/opt/bin/python" -X faulthandler tests/stress_fuzz.py \
  --seconds "$((seconds / 2))" --seed "$seed") || status=1

if [ "$status" = 0 ]; then
  echo "sanitize: suite and fuzz pass, no sanitizer report, no crash"
else
  echo "sanitize: FAILED" >&2
fi
exit $status
