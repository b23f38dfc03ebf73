"""The suite leaves the user's checkout as it found it: a sample of the harness's tests
(scripts, in-process runs, ablations, reports), run from the checkout's root as a user
runs pytest, changes nothing `git status` sees, ignored files (./output, ./data) included."""
import os
import subprocess
import sys

from leclip import catalogue

REPO = catalogue.REPO
SAMPLE = [
    "tests/test_harness.py::test_run_sh_skips_a_finished_seed",
    "tests/test_harness.py::test_force_moves_the_finished_seed_aside_and_runs_it",
    "tests/test_bad_inputs.py::test_ablate_applies_overrides_to_every_row",
    "tests/test_bad_inputs.py::test_harness_refuses_overrides_that_would_file_results_elsewhere",
    "tests/test_reports.py::test_seed_summary_gives_each_seed_its_mean_std_and_time",
]
CACHES = ("__pycache__", ".pytest_cache")


def tree_state():
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if not any(cache in line for cache in CACHES))


def test_a_sample_of_the_harness_tests_leaves_the_checkout_untouched():
    before = tree_state()
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    env.pop("OUTPUT", None)
    env.pop("DATA", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SAMPLE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert tree_state() == before
