"""The one progress helper: a bar on a terminal, one line per pass elsewhere."""
import re

from leclip.progress import progress


def test_off_a_terminal_a_pass_prints_one_line_with_its_count_and_time(capsys):
    assert list(progress(range(3), "Scoring the unlabeled images")) == [0, 1, 2]
    out = capsys.readouterr()
    assert re.fullmatch(r"Scoring the unlabeled images: 3 batches in 0:00:0\d\n", out.out)
    assert out.err == ""  # no bar in a log or pipe
    list(progress([7], "One", unit="image"))
    assert capsys.readouterr().out == "One: 1 image in 0:00:00\n"
