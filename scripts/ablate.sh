#!/usr/bin/env bash
# Run the ablation table of the task's method (CFSG-CLIP, CCD or CSA; rows in
# configs/ablations/<method>.txt, each a set of config switches) on one setting, then
# print it with the task's metrics (mean ± std when several seeds are given).
#   bash scripts/ablate.sh DATASET SETTING [SEED ...] [--rows FILE] [-- KEY VALUE ...]   (seed 1 by default, as the paper)
# --rows FILE: another rows file of the same method (configs/ablations/csa_choices.txt: CSA's own choices).
# Overrides after -- apply to every row. DATA and OUTPUT as for run.sh; rows go to
# $OUTPUT/<dataset>/<setting>/ablation/<row>/. Ctrl-C or SIGTERM stops the running seed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/ablate.sh DATASET SETTING [SEED ...]" >&2
  exit 2
fi
source "$here/children.sh"
dataset=$1 setting=$2
mapfile -t rows < <(python -m leclip.harness ablate "$@" --list)
[ ${#rows[@]} -gt 0 ] || exit 2  # the harness printed why
run_child python -m leclip.harness ablate "$@"
python "$here/parse_results.py" "${OUTPUT:-./output}/$dataset/$setting/ablation" --methods "${rows[@]}"
