"""Kill a run at a chosen point and resume it, on either engine: the helper behind
tests/test_resume.py, for any trainer's kill/resume test.

Every run is a fresh process (`python tests/kill_resume.py SPEC`), as a user's would be:
the engine is chosen at import, and the kill is `os._exit` (no clean-up, no finally).
On the "dassl" engine the process imports the miniature Dassl of tests/mini_dassl.py
(Dassl's checkpoints: weights, optimizer and scheduler only; epochs not reseeded).

A kill point is (epoch, where), epoch 1-based: where = a batch number (killed before
that batch's step), "start" (after the epoch's `before_epoch`, e.g. after a method's pass
over the data, before its first batch) or "end" (after the epoch's `after_epoch`, i.e.
after its checkpoint when one is due).

    check_kill_resume(folder, data_root, engine, trainer, config, opts, dataset, setting, kills)

runs the uninterrupted run, then for each kill point a run killed there and the same
command again (which resumes), and asserts that the final weights (every model's last
checkpoint), the trainer state saved with them (RNG excepted) and results.json are
identical to the uninterrupted run's.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

KILLED = 75  # exit status of a killed run
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# results.json entries that describe the process, not the result
VOLATILE = ("seconds",)


def _install_kill(epoch, where):
    from leclip.trainer_base import CLIPTrainer

    if where in ("start", "end"):
        hook = "before_epoch" if where == "start" else "after_epoch"
        original = getattr(CLIPTrainer, hook)

        def killing_hook(self):
            original(self)
            if self.epoch + 1 == epoch:
                sys.stdout.flush()
                os._exit(KILLED)

        setattr(CLIPTrainer, hook, killing_hook)
        return
    original_step = CLIPTrainer.forward_backward

    def killing_step(self, *batches):
        if (self.epoch + 1, self.batch_idx + 1) == (epoch, where):
            sys.stdout.flush()
            os._exit(KILLED)
        return original_step(self, *batches)

    CLIPTrainer.forward_backward = killing_step


def _main(spec):
    """One run in this process (the subprocess side)."""
    torch.set_num_threads(1)
    from leclip import catalogue, runner

    if spec["kill"] is not None:
        _install_kill(*spec["kill"])
    cfg = catalogue.setup_cfg(
        osp.join(REPO, spec["config"]),
        catalogue.dataset_config(spec["dataset"]),
        catalogue.setting_opts(spec["dataset"], spec["setting"]) + spec["opts"],
        root=spec["root"],
        output_dir=spec["output_dir"],
        seed=spec["seed"],
        trainer=spec["trainer"],
    )
    runner.run(cfg)


def run(output_dir, data_root, engine, trainer, config, opts, dataset, setting, kill=None, seed=1):
    """One run in a fresh process; returns its CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.pop("LECLIP_ENGINE", None)
    if engine == "dassl":
        import mini_dassl

        root = osp.join(osp.dirname(str(output_dir)), "mini_dassl")
        if not osp.isdir(root):
            mini_dassl.write(root)
        env["PYTHONPATH"] = os.pathsep.join([root, REPO])
    else:
        env["LECLIP_ENGINE"] = "builtin"
    spec = dict(output_dir=str(output_dir), root=str(data_root), trainer=trainer, config=config, opts=list(opts),
                dataset=dataset, setting=setting, kill=kill, seed=seed)
    return subprocess.run([sys.executable, __file__, json.dumps(spec)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


def final_state(output_dir):
    """({model: (checkpoint name, state_dict, trainer_state without the RNG)}, results.json
    without the volatile entries) of a finished run."""
    from leclip.dassl_compat import dassl_checkpoint_classes
    from leclip.engine.checkpoint import epoch_files

    models = {}
    for name in sorted(os.listdir(output_dir)):
        files = epoch_files(osp.join(output_dir, name)) if osp.isdir(osp.join(output_dir, name)) else {}
        if files:
            last = files[max(files)]
            with torch.serialization.safe_globals(dassl_checkpoint_classes()):  # Dassl's hold its scheduler
                checkpoint = torch.load(last, map_location="cpu", weights_only=True)
            state = {k: v for k, v in (checkpoint.get("trainer_state") or {}).items() if k != "rng"}
            models[name] = (osp.basename(last), checkpoint["state_dict"], state)
    with open(osp.join(output_dir, "results.json")) as f:
        results = {k: v for k, v in json.load(f).items() if k not in VOLATILE}
    return models, results


def assert_same(expected, got, what):
    """Bit-identical nested dicts / lists / tensors / numbers."""
    if torch.is_tensor(expected):
        assert torch.is_tensor(got) and expected.dtype == got.dtype and torch.equal(expected, got), what
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and set(expected) == set(got), f"{what}: keys {set(expected) ^ set(got)}"
        for key in expected:
            assert_same(expected[key], got[key], f"{what}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(got), what
        for i, (a, b) in enumerate(zip(expected, got)):
            assert_same(a, b, f"{what}[{i}]")
    else:
        assert expected == got, f"{what}: {expected!r} != {got!r}"


def _ok(done, what):
    assert done.returncode == 0, f"{what} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-3000:]}"


def check_kill_resume(folder, data_root, engine, trainer, config, opts, dataset, setting, kills):
    """The uninterrupted run, then per kill point a killed run resumed by the same command;
    each ends identical to the uninterrupted one. Returns the uninterrupted final state."""
    straight_dir = osp.join(str(folder), "straight")
    _ok(run(straight_dir, data_root, engine, trainer, config, opts, dataset, setting), "the uninterrupted run")
    expected = final_state(straight_dir)
    assert expected[1]["engine"] == engine
    for epoch, where in kills:
        out = osp.join(str(folder), f"killed-{epoch}-{where}")
        killed = run(out, data_root, engine, trainer, config, opts, dataset, setting, kill=(epoch, where))
        assert killed.returncode == KILLED, f"not killed at {(epoch, where)}: {killed.stdout[-2000:]}{killed.stderr[-3000:]}"
        resumed = run(out, data_root, engine, trainer, config, opts, dataset, setting)
        _ok(resumed, f"the run resumed after a kill at {(epoch, where)}")
        assert_same(expected, final_state(out), f"killed at epoch {epoch}, {where}")
    return expected


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
