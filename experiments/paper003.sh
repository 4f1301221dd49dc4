#!/usr/bin/env bash
# Paper 003's experiments (docs/results.md sections 1-5): every run below, two sessions at a
# time on one torch thread each, resumable (rerun the same command: only what is missing
# trains; a killed session continues from its last epoch). Tables and figures:
# experiments/paper003_report.py.
#   experiments/paper003.sh [DATA_DIR] [OUT] [PART ...]
# PARTs (default all, in this order): activations paper dac variants crossbar fig2a table1
# permuted short
set -euo pipefail
data=${1:-../shared/datasets}
out=${2:-runs/paper003}
shift $(($# < 2 ? $# : 2))
parts=${*:-activations paper dac variants crossbar fig2a table1 permuted short}
act=relu  # the activation that reaches both tasks (section 5); given explicitly everywhere
sweep() { .venv/bin/metaplast sweep --data-dir "$data" --jobs 2 --threads 1 "$@"; }
# the repetitions of the crossbar runs and of Fig. 2a go through a Ray cluster started here
# (docs/cluster.md): the same run directories as a local sweep
ray() { .venv/bin/metaplast sweep --data-dir "$data" --threads 1 --executor ray "$@"; }
paper() { sweep --preset paper --activation "$act" "$@"; }
has() { [[ " $parts " == *" $1 "* ]]; }

# Every activation on the paper schedule (784-512-512-10, 50 + 50 epochs, the first 10 at
# m* = 0), at the paper's two m* (Fig. 2b and 2c); seed 0.
# (The runs of seed 0 with relu and sign in "paper" and "paper-sign" are these.)
has activations && sweep --preset paper --vary activation=sign,relu,relu:4 \
  --vary mstar=2.2,3 --out "$out/activations"

# The paper run, three seeds, at both m*, with the default activation and with sign (the
# reference code's); running statistics at m* = 3, as issue 2 tested, for comparison.
if has paper; then
  paper --vary mstar=2.2,3 --vary seed=0,1,2 --out "$out/paper"
  sweep --preset paper --activation sign --vary mstar=2.2,3 --vary seed=0,1,2 \
    --out "$out/paper-sign"
  sweep --preset paper --activation sign --mstar 3 --bn-stats running --vary seed=0 \
    --out "$out/paper-running"
fi

# How few activation levels a DAC may have: relu:K with K levels in [0, R] (R = 1 unless
# given: relu:16:4 tells the clip from the level count); seed 0.
has dac && sweep --preset paper --vary activation=relu:8,relu:16,relu:16:4 --vary mstar=2.2 \
  --out "$out/dac"

# The choices the paper leaves open, around the default: the initialization it describes (a
# Gaussian with its mean between two levels), inputs in [0, 1] as the reference code feeds
# them, the learning rate; seed 0. (m* across the paper's window: Fig. 2a below.)
if has variants; then
  paper --vary mstar=2.2 --vary init_mean=0.09375 --out "$out/init-mean"
  paper --vary mstar=2.2 --vary inputs=unsigned --out "$out/inputs"
  # the learning rate on the shortened schedule (784-256-256-10, 3 + 3 epochs)
  sweep --activation "$act" --vary lr=0.002,0.005,0.01 --out "$out/lr-short"
fi

# Fig. 5a/5b: the 1T1R HfOx model in the loop on the paper schedule, three seeds.
has crossbar && ray --preset paper --activation "$act" --mstar 2.2 --crossbar hfox-1t1r \
  --seeds 0-2 --out "$out/crossbar-hfox"

# Fig. 2a: m* from 0 to 5, 20 + 20 epochs (the first 4 at m* = 0), seed 0 (more seeds or
# m* values: add them and rerun; the finished ones are skipped).
has fig2a && ray --preset paper --activation "$act" --epochs 20,20 --pretrain-epochs 4 \
  --vary mstar=0,1,2,3,4,5 --seeds 0 --out "$out/fig2a"

# Table I on the full schedule: hidden 256 and 1024 (512 is the paper run above).
has table1 && paper --mstar 2.2 --vary hidden=256,256/1024,1024 --out "$out/table1"

# Beyond the paper: five permuted-MNIST tasks, 5 epochs each (the first 2 at m* = 0).
has permuted && sweep --activation "$act" --tasks permuted-mnist:5 --epochs 5,5,5,5,5 \
  --pretrain-epochs 2 --hidden 512,512 --vary mstar=0,1,2,3,4 --out "$out/permuted"

# The short schedule of section 2 (784-256-256-10, 3 + 3 epochs).
if has short; then
  sweep --activation "$act" --vary mstar=0,1,2,3,4,5 --out "$out/short-mstar"
fi
