#!/usr/bin/env bash
# Run every method of the dataset's task (or the given ones) on one setting, then print
# the paper-style table (mean ± std over seeds) and write compare.md / compare.csv.
#   bash scripts/compare.sh DATASET SETTING [METHOD ...]
# SEEDS (default "1 2 3"), DATA and OUTPUT as for run.sh. Ctrl-C or SIGTERM stops the
# running seed (its checkpoint is kept: the same command resumes) and the script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
if [ $# -lt 2 ]; then
  echo "usage: bash scripts/compare.sh DATASET SETTING [METHOD ...]" >&2
  exit 2
fi
source "$here/children.sh"
dataset=$1 setting=$2
shift 2
if [ $# -gt 0 ]; then
  methods=("$@")
else
  mapfile -t methods < <(python -m leclip.harness methods "$dataset" "$setting")
  [ ${#methods[@]} -gt 0 ] || exit 2  # the harness printed why
fi
for method in "${methods[@]}"; do
  run_child bash "$here/run.sh" "$method" "$dataset" "$setting" ${SEEDS:-1 2 3}
done
python "$here/parse_results.py" "${OUTPUT:-./output}/$dataset/$setting" --methods "${methods[@]}"
