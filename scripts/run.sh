#!/usr/bin/env bash
# Run one method on one benchmark setting for several seeds (1 2 3 by default).
#   bash scripts/run.sh METHOD DATASET SETTING [SEED ...] [-- KEY VALUE ...]
# DATA (default ./data) is the data root, OUTPUT (default ./output) the output root;
# results go to $OUTPUT/<dataset>/<setting>/<method>/seed<k>/. A seed whose
# results.json exists is skipped; an interrupted seed resumes from its checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/run.sh METHOD DATASET SETTING [SEED ...] [-- KEY VALUE ...]" >&2
  python -c "from leclip.harness import METHODS, DATASETS; print('methods:', ' '.join(METHODS)); print('datasets:', ' '.join(DATASETS))" >&2
  exit 2
fi
exec python -m leclip.harness run "$@"
