#!/usr/bin/env bash
# Run one method on one benchmark setting for several seeds (1 2 3 by default).
#   bash scripts/run.sh METHOD DATASET SETTING [SEED ...] [--dry-run] [--overwrite] [--force]
#        [--force-resume] [--skip-bad-images] [--viz] [--debug] [-- KEY VALUE ...]
# DATA (default ./data) is the data root, OUTPUT (default ./output) the output root, both
# relative to the folder you run this from; results go to
# $OUTPUT/<dataset>/<setting>/<method>/seed<k>/. A seed whose results.json exists is
# skipped when its config.yaml is the config this command resolves; of another config it
# is refused (--force moves its folder aside to replaced-<time>/ and runs it again). An
# interrupted seed resumes from its last epoch checkpoint. --dry-run trains nothing and
# loads no weights: it prints the config files, where the weights are and whether they
# are there, the images per split on disk and the estimated steps (or every missing piece).
# Ctrl-C or SIGTERM stops the running seed, which keeps its last epoch checkpoint (once an
# epoch has finished). It ends with a summary: each seed's
# metrics and time, their mean ± std, and where the results are. --viz: after each seed
# it runs, its figures (CCD, CSA; README "Figures") in <seed folder>/viz/.
# GPUS=N (N > 1) trains each seed on N processes under torchrun: one run, BATCH_SIZE
# global (docs/DISTRIBUTED.md).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/run.sh METHOD DATASET SETTING [SEED ...] [-- KEY VALUE ...]" >&2
  python -c "from leclip.harness import usage_lists; print(usage_lists())" >&2
  exit 2
fi
# the harness replaces this shell: signals reach it, and it passes them to train.py
exec python -m leclip.harness run "$@"
