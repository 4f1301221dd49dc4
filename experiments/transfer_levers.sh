#!/usr/bin/env bash
# What a lab can do on its own passive TiO2 array to make a transfer hold (issue 15, results
# section 10): each lever of the write plan and of the network, alone and in combination, with
# the shipped device file and the paper's stuck rates.
#   moons: regular and hardware-aware (trained against the same write plan), the project's
#          recipe, seeds 0-4 (or $SEEDS), 10,000 transfers;
#   mnist: the sessions of experiments/transfer_paper.sh (in $SESSIONS, default
#          runs/transfer/sessions), each written onto TiO2 100 times per plan.
# Resumable: what exists is skipped. Tables: experiments/transfer_report.py OUT --levers.
#   [SEEDS="0 1 2 3 4"] experiments/transfer_levers.sh [DATA_DIR] [OUT] [moons|mnist|all]
set -euo pipefail
data=${1:-../shared/datasets}
out=${2:-runs/transfer-levers}
part=${3:-all}
sessions=${SESSIONS:-runs/transfer/sessions}
read -r -a seeds <<< "${SEEDS:-0 1 2 3 4}"
mp=(.venv/bin/metaplast)
export OMP_NUM_THREADS=1
# shellcheck source=experiments/lib.sh
. "$(dirname "$0")/lib.sh"
mkdir -p "$out"

[ "$part" = mnist ] || while IFS='|' read -r name options; do
  for seed in "${seeds[@]}"; do
    for training in regular hardware-aware; do
      # shellcheck disable=SC2086
      once "$out/$name-$training-seed$seed" transfer.json "${mp[@]}" transfer --dataset moons \
        --training "$training" --seed "$seed" $options
    done
  done
done <<'PLANS'
plain|
bias-digital|--bias digital
order-column-major|--tile-order column-major
order-reverse|--tile-order reverse
verify-10uS|--verify-tolerance 10
verify-20uS-10x|--verify-tolerance 20 --verify-iterations 10
hidden-16|--hidden 16
hidden-32|--hidden 32
known-map|--stuck-map known
block-4x4|--tile-block 4x4
block-2x2|--tile-block 2x2
known-map+block-4x4|--stuck-map known --tile-block 4x4
known-map+block-2x2|--stuck-map known --tile-block 2x2
known-map+block-2x2+verify-10uS|--stuck-map known --tile-block 2x2 --verify-tolerance 10
known-map+block-2x2+hidden-16|--stuck-map known --tile-block 2x2 --hidden 16
known-map+block-2x2+bias-digital|--stuck-map known --tile-block 2x2 --bias digital
known-map+block-1x2+bias-digital|--stuck-map known --tile-block 1x2 --bias digital
known-map+block-1x1+bias-digital|--stuck-map known --tile-block 1x1 --bias digital
measured-map|--stuck-map measured
measured-map+block-2x2|--stuck-map measured --tile-block 2x2
PLANS

mkdir -p "$out/mnist"
[ "$part" = moons ] || for session in "$sessions"/*-regular-seed* "$sessions"/*-ha-tio2-passive-seed*; do
  [ -e "$session/metrics.json" ] || continue
  name=$(basename "$session")
  seed=${name##*seed}
  while IFS='|' read -r plan options; do
    # shellcheck disable=SC2086
    once "$out/mnist/$name-$plan" transfer.json "${mp[@]}" transfer --dataset mnist --from "$session" \
      --crossbar tio2-passive --transfers 100 --seed "$seed" --data-dir "$data" $options
  done <<'PLANS'
plain|
verify-10uS|--verify-tolerance 10
known-map|--stuck-map known
known-map+block-2x2|--stuck-map known --tile-block 2x2
measured-map+block-2x2|--stuck-map measured --tile-block 2x2
PLANS
done
