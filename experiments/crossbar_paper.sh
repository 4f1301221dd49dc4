#!/usr/bin/env bash
# The crossbar results of docs/results.md (section 9), one session per torch thread, resumable:
# rerun the same command and only what is missing trains. Quick schedule (784-256-256-10,
# 3 + 3 epochs, m* = 0 then 3) throughout; the full paper-preset run is its own command in
# docs/results.md. Tables: experiments/crossbar_report.py OUT.
#   experiments/crossbar_paper.sh [DATA_DIR] [OUT] [core|all]
# core (about half an hour on two cores): seeds 0-2 on both models and TiO2; all (default)
# adds seeds 3-4, stuck devices, endurance-limited devices and the larger sizes.
set -euo pipefail
data=${1:-../shared/datasets}
out=${2:-runs/crossbar}
part=${3:-all}
seeds=$([ "$part" = core ] && echo 0,1,2 || echo 0,1,2,3,4)
full() { [ "$part" = all ]; }
mp=(.venv/bin/metaplast)
common=(--data-dir "$data" --threads 1 --jobs 1)

# repeated seeds on the 1T1R model, and the same seeds on the ideal crossbar
"${mp[@]}" sweep --crossbar hfox-1t1r --vary seed="$seeds" --out "$out/seeds-hfox" "${common[@]}"
"${mp[@]}" sweep --crossbar ideal --vary seed="$seeds" --out "$out/seeds-ideal" "${common[@]}"
# the passive TiO2 model in the loop
"${mp[@]}" sweep --crossbar tio2-passive --vary seed=0 --out "$out/seeds-tio2" "${common[@]}"
if full; then
  # stuck devices: total share 2 s, half stuck in HRS and half in LRS, seeds 0-2
  for s in 0.0025 0.005 0.01; do
    "${mp[@]}" sweep --crossbar hfox-1t1r --stuck-lrs "$s" --vary stuck_hrs="$s" \
      --vary seed=0,1,2 --out "$out/stuck-hfox" "${common[@]}"
  done
  # endurance-limited devices (a worn-out device keeps its last conductance)
  "${mp[@]}" sweep --crossbar hfox-1t1r --vary endurance=3,6,12 --vary seed=0,1,2 \
    --out "$out/endurance-hfox" "${common[@]}"
  # Table I sizes (256 is seed 0 above)
  "${mp[@]}" sweep --crossbar hfox-1t1r --vary hidden=512,512/1024,1024 \
    --out "$out/sizes-hfox" "${common[@]}"
fi
