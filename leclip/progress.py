"""Progress bars for long passes (evaluation, pseudo-labelling, rendering): tqdm on
stderr, silent when stderr is not a terminal (log files, CI, pipes)."""
from tqdm import tqdm


def progress(iterable, desc, unit="batch", **kwargs):
    return tqdm(iterable, desc=desc, unit=unit, disable=None, leave=False, **kwargs)
