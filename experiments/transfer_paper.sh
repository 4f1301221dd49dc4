#!/usr/bin/env bash
# The transfer results of docs/results.md (section 10): paper 004's half-moons experiment over
# seeds and bias placements, and the metaplastic MNIST network transferred onto both device
# models with and without hardware-aware training. Resumable: what exists is skipped.
# Tables and the Fig. 6 pair: experiments/transfer_report.py OUT.
#   experiments/transfer_paper.sh [DATA_DIR] [OUT] [moons|mnist|all]
set -euo pipefail
data=${1:-../shared/datasets}
out=${2:-runs/transfer}
part=${3:-all}
mp=(.venv/bin/metaplast)
export OMP_NUM_THREADS=1
# shellcheck source=experiments/lib.sh
. "$(dirname "$0")/lib.sh"

# half moons: the paper's split, 10,000 transfers each
mkdir -p "$out/moons"
[ "$part" = mnist ] || for seed in 0 1 2 3 4; do
  for bias in row separate digital; do
    for training in regular hardware-aware; do
      run="$out/moons/$training-$bias-seed$seed"
      once "$run" transfer.json "${mp[@]}" transfer --dataset moons --training "$training" \
        --bias "$bias" --seed "$seed"
    done
  done
done

# the metaplastic network (quick schedule): MNIST alone over seeds 0-2, MNIST then Fashion-MNIST
# at seed 0
mkdir -p "$out/sessions" "$out/mnist"
[ "$part" = moons ] || for run in mnist:0 mnist:1 mnist:2 mnist,fashion-mnist:0; do
  tasks=${run%%:*} seed=${run##*:}
  epochs=$([ "$tasks" = mnist ] && echo 3 || echo 3,3)
  for ha in none tio2-passive hfox-1t1r; do
    name="${tasks//,/-then-}-$([ "$ha" = none ] && echo regular || echo "ha-$ha")-seed$seed"
    extra=()
    [ "$ha" = none ] || extra=(--hardware-aware "$ha")
    once "$out/sessions/$name" metrics.json "${mp[@]}" train --preset quick --tasks "$tasks" \
      --epochs "$epochs" --seed "$seed" --threads 1 --data-dir "$data" "${extra[@]}"
    for xbar in tio2-passive hfox-1t1r; do
      once "$out/mnist/$name-on-$xbar" transfer.json "${mp[@]}" transfer --dataset mnist \
        --from "$out/sessions/$name" --crossbar "$xbar" --transfers 100 --seed "$seed" \
        --data-dir "$data"
    done
  done
done
