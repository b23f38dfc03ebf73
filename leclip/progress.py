"""The one progress helper for every pass over a dataset (evaluation, scoring,
pseudo-labelling, rendering).

On a terminal: a tqdm bar on stderr with the count, the elapsed time and the ETA. Elsewhere
(log files, CI, pipes): no bar, and one line per pass when it ends ("<desc>: <n> <unit>s in
<elapsed>"), printed to stdout, which the run's log.txt records.
"""
import datetime
import sys
import time

from tqdm import tqdm


def progress(iterable, desc, unit="batch", **kwargs):
    if sys.stderr.isatty():
        yield from tqdm(iterable, desc=desc, unit=unit, leave=False, **kwargs)
        return
    start, count = time.time(), 0
    for item in iterable:
        count += 1
        yield item
    elapsed = datetime.timedelta(seconds=round(time.time() - start))
    print(f"{desc}: {count} {unit}{'' if count == 1 else 'es' if unit.endswith('ch') else 's'} in {elapsed}")
