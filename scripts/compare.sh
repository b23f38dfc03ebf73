#!/usr/bin/env bash
# Run every method of a task (or the given ones) and print the paper-style tables
# (mean ± std over seeds).
#   bash scripts/compare.sh DATASET SETTING [METHOD ...] [--plot] [--papers]
#   bash scripts/compare.sh TASK [METHOD ...] [--plot] [--papers]        (TASK: A, B or C)
# The first runs one setting and writes compare.md and compare.csv (with --plot also
# compare.png, a bar chart with std error bars) in $OUTPUT/<dataset>/<setting>/. The
# second runs every setting the papers report on every dataset of the task found under
# DATA (the embedded world always is), then prints the whole-paper tables, a column per
# dataset and setting; a dataset absent from DATA is marked, not failed. --papers puts
# the papers' own numbers (configs/papers.yaml) below ours, labelled with their paper.
# SEEDS (default "1 2 3"), DATA and OUTPUT as for run.sh. Ctrl-C or SIGTERM stops the
# running seed (its checkpoint is kept: the same command resumes) and the script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
usage="usage: bash scripts/compare.sh DATASET SETTING [METHOD ...] [--plot] [--papers]
       bash scripts/compare.sh TASK [METHOD ...] [--plot] [--papers]   (TASK: A, B or C)"
args=() report=()
for arg in "$@"; do
  case "$arg" in
    --plot | --papers) report+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
source "$here/children.sh"
case "${args[0]:-}" in
  A | B | C)
    task=${args[0]}
    mapfile -t settings < <(python -m leclip.harness settings "$task")
    [ ${#settings[@]} -gt 0 ] || exit 2  # the harness printed why
    for pair in "${settings[@]}"; do
      read -r dataset setting <<< "$pair"
      echo "== task $task: $dataset $setting"
      run_child bash "$0" "$dataset" "$setting" "${args[@]:1}" "${report[@]}"
    done
    methods=("${args[@]:1}")
    python "$here/parse_results.py" "${OUTPUT:-./output}" --task "$task" --data "${DATA:-./data}" \
      ${methods[@]:+--methods "${methods[@]}"} "${report[@]}"
    exit 0
    ;;
esac
if [ ${#args[@]} -lt 2 ]; then
  echo "$usage" >&2
  exit 2
fi
dataset=${args[0]} setting=${args[1]}
if [ ${#args[@]} -gt 2 ]; then
  methods=("${args[@]:2}")
else
  mapfile -t methods < <(python -m leclip.harness methods "$dataset" "$setting")
  [ ${#methods[@]} -gt 0 ] || exit 2  # the harness printed why
fi
for method in "${methods[@]}"; do
  run_child bash "$here/run.sh" "$method" "$dataset" "$setting" ${SEEDS:-1 2 3}
done
python "$here/parse_results.py" "${OUTPUT:-./output}/$dataset/$setting" --methods "${methods[@]}" "${report[@]}"
