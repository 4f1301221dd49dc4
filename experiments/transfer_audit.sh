#!/usr/bin/env bash
# The audit of paper 004's transfer (docs/transfer.md, results section 10): this project's
# recipe and the paper's code's recipe (--recipe paper-code), each over five seeds, and a
# screen that moves one choice at a time from one recipe to the other (seeds 0-4, or $SEEDS),
# all with 10,000 transfers. Resumable: what exists is skipped. Tables:
# experiments/transfer_report.py OUT --audit.
#   [SEEDS="0 1 2 3 4"] experiments/transfer_audit.sh [OUT] [recipes|screen|all]
set -euo pipefail
out=${1:-runs/transfer-audit}
part=${2:-all}
read -r -a seeds <<< "${SEEDS:-0 1 2 3 4}"
mp=(.venv/bin/metaplast)
export OMP_NUM_THREADS=1
# shellcheck source=experiments/lib.sh
. "$(dirname "$0")/lib.sh"
mkdir -p "$out/recipes" "$out/screen"

# both recipes, five seeds, regular and hardware-aware
[ "$part" = screen ] || for recipe in project paper-code; do
  for seed in "${seeds[@]}"; do
    for training in regular hardware-aware; do
      once "$out/recipes/$recipe-$training-seed$seed" transfer.json "${mp[@]}" transfer --dataset moons \
        --recipe "$recipe" --training "$training" --seed "$seed"
    done
  done
done

# one choice at a time: from the project's recipe towards the paper's code (project+X), and
# from the paper's code back to the project's (paper-code-X), the options of each direction
[ "$part" = recipes ] || while IFS='|' read -r name towards_paper back_to_project; do
  for seed in "${seeds[@]}"; do
    for training in regular hardware-aware; do
      # choices of the hardware-aware phase do nothing to a regular network
      case "$name" in ha-start|weight-decay|stuck-gradient) [ "$training" = regular ] && continue ;; esac
      # shellcheck disable=SC2086
      once "$out/screen/project+$name-$training-seed$seed" transfer.json "${mp[@]}" transfer --dataset moons \
        --recipe project --training "$training" --seed "$seed" $towards_paper
      # shellcheck disable=SC2086
      once "$out/screen/paper-code-$name-$training-seed$seed" transfer.json "${mp[@]}" transfer --dataset moons \
        --recipe paper-code --training "$training" --seed "$seed" $back_to_project
    done
  done
done <<'EOF'
sampler|--sampler paper-code|--sampler project
sampler-physical|--sampler paper-code-physical|--sampler paper-code-physical
bias|--bias paper|--bias row
init|--init xavier|--init torch
lr|--lr 0.1|--lr 0.01
schedule|--batch-size 256 --epochs 10000 --ha-epochs 10000|--batch-size 0 --epochs 4000 --ha-epochs 4000
ha-start|--ha-start scratch|--ha-start regular
weight-decay|--weight-decay 0.0001|--weight-decay 0
stuck-gradient|--stuck-gradient yes|--stuck-gradient no
EOF
