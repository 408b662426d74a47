#!/usr/bin/env bash
# What a new user gets from this checkout, on a PATH without cmake or ninja (run by `make test`):
#   1. `python -m build` makes the sdist, then the wheel from the sdist in an isolated environment (cmake and ninja
#      come from the build requirements); the sdist holds every tracked file of csrc/ and dt_fast/ (datasets
#      included) and nothing generated; the wheel holds dt_fast._C and the datasets;
#   2. the wheel with the [bench] extra (which holds [envs]) goes into a fresh venv (torch pinned to the CPU build
#      on disk);
#   3. from a directory outside the source tree: dt_fast._C imports from the venv, `dt-fast --help` and every
#      subcommand's --help run, `dt-fast train` runs a few steps on the embedded dataset, `dt-fast eval` runs a
#      few episodes, and its --video (the [video] extra, not installed) fails with an error naming the extra;
#      `dt-fast bench --rows sampler` (one group of the suite) writes its results into the --out directory and
#      nothing into the installed package.
# Usage: tests/packaging/check_install.sh PYTHON   (a Python with the `build` package, e.g. .venv/bin/python)
set -euo pipefail

PY=$(cd "$(dirname "${1:?usage: $0 PYTHON}")" && pwd)/$(basename "$1") # absolute; a venv's link is not resolved
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# The fresh venv (about 1.6 GB: torch, envpool) and the builds' temporary files live in memory when /dev/shm has
# room: writing and deleting them on this disk takes minutes.
tmp=${TMPDIR:-/tmp}
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt 4000000 ]; then tmp=/dev/shm; fi
WORK=$(mktemp -d -p "$tmp" dt_fast_check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/tmp"
export TMPDIR="$WORK/tmp"

fail() {
  echo "check_install: FAIL: $*" >&2
  exit 1
}
step() { echo "check_install: $* ($SECONDS s)"; }
# run LOG COMMAND...: the command's output goes to $WORK/LOG, shown if it fails.
run() {
  local log=$WORK/$1
  shift
  "$@" >"$log" 2>&1 || { tail -60 "$log"; fail "$*"; }
}
# expect LOG PATTERN: the log has a line matching the grep pattern.
expect() { grep -q -- "$2" "$WORK/$1" || { cat "$WORK/$1"; fail "$1 has no line matching $2"; }; }

# Every program of the current PATH except cmake and ninja, in one directory that becomes the whole PATH.
mkdir "$WORK/bin"
IFS=: read -ra dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  for tool in "$dir"/*; do
    name=${tool##*/}
    case $name in cmake | ctest | cpack | ccmake | cmake-gui | ninja) continue ;; esac
    if [ -x "$tool" ] && [ ! -e "$WORK/bin/$name" ]; then ln -s "$tool" "$WORK/bin/$name"; fi
  done
done
git -C "$ROOT" ls-files csrc dt_fast CMakeLists.txt setup.py pyproject.toml MANIFEST.in >"$WORK/tracked.txt"
export PATH="$WORK/bin"
if command -v cmake || command -v ninja; then fail "cmake or ninja is still on PATH"; fi
step "PATH without cmake and ninja"

run build.log "$PY" -m build --outdir "$WORK/dist" "$ROOT"
sdist=$(echo "$WORK"/dist/dt_fast-*.tar.gz)
wheel=$(echo "$WORK"/dist/dt_fast-*.whl)
[ -f "$sdist" ] && [ -f "$wheel" ] || fail "python -m build made no sdist and wheel: $(ls "$WORK/dist")"
step "python -m build: ${sdist##*/} ${wheel##*/}"

tar -tzf "$sdist" | sed 's|^[^/]*/||' >"$WORK/sdist.txt"
missing=$(grep -vxF -f "$WORK/sdist.txt" "$WORK/tracked.txt" || true)
[ -z "$missing" ] || fail "the sdist lacks tracked files: $missing"
if grep -E '(^|/)(\.venv|build|runs|__pycache__)/|\.so$|\.pyc$' "$WORK/sdist.txt"; then
  fail "generated files in the sdist"
fi
"$PY" -m zipfile -l "$wheel" >"$WORK/wheel.txt"
for f in 'dt_fast/_C\.cpython-[^ ]*\.so' dt_fast/datasets/hopper_medium_v4.hdf5 dt_fast/datasets/README.md; do
  expect wheel.txt "^$f "
done

"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
run pip.log "$VPY" -m pip install -q --no-compile torch==2.13.0 "$wheel[bench]"
step "fresh venv with the wheel and [bench]"

mkdir "$WORK/user" && cd "$WORK/user"
dt=$WORK/venv/bin/dt-fast
run help.log "$dt" --help
"$VPY" - "$WORK/venv" <<'EOF'
import argparse
import contextlib
import io
import sys
from pathlib import Path

import dt_fast
import dt_fast._C
from dt_fast.cli import build_parser, main

venv = Path(sys.argv[1]).resolve()
for module in (dt_fast, dt_fast._C):
    assert venv in Path(module.__file__).resolve().parents, f"{module.__name__} imported from {module.__file__}"
assert dt_fast.HAS_C_EXT
commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
assert commands, "dt-fast has no subcommands"
for command in commands:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"])
    assert out.getvalue().startswith(f"usage: dt-fast {command}"), f"dt-fast {command} --help: {out.getvalue()!r}"
print(f"check_install: dt-fast --help, and --help of {' '.join(commands)}")
EOF
step "import dt_fast._C from the venv"

run train.log "$dt" train --steps 5 --batch-size 8 --context-len 5 --hidden-size 32 --n-layer 1 --n-head 1 \
  --sampler-threads 1 --eval-every 0 --save-every 5 --log-every 5 --out run
[ -f run/model.safetensors ] && [ -f run/dt_fast.json ] || fail "train wrote no checkpoint in run/: $(ls run)"
step "train 5 steps on the embedded dataset"

# The episodes run and print their table, then the video needs imageio-ffmpeg of the [video] extra, not installed.
if "$dt" eval run --episodes 2 --num-envs 2 --no-progress --video run.mp4 >"$WORK/eval.log" 2>&1; then
  fail "eval --video succeeded without imageio-ffmpeg"
fi
expect eval.log "^Hopper-v4, mode exact"
expect eval.log "needs imageio-ffmpeg: pip install 'dt-fast\[video\]'"
step "eval 2 episodes; --video without [video] names the extra"

# The suite's cheapest group from the installed package: results in --out, nothing written inside the package.
touch "$WORK/before-bench"
run bench.log "$dt" bench --rows sampler --out results
expect bench.log "^sampler batches/s, batch 64 x K 20"
[ "$(ls results)" = "$(printf 'suite.json\nsuite.md')" ] || fail "dt-fast bench wrote $(ls results) in results/"
package=$("$VPY" -c "import dt_fast, os; print(os.path.dirname(dt_fast.__file__))")
written=$(find "$package" -newer "$WORK/before-bench" -type f ! -name '*.pyc')
[ -z "$written" ] || fail "dt-fast bench wrote into the installed package: $written"
step "dt-fast bench --rows sampler wrote results/suite.json and suite.md; passed"
