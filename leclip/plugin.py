"""The one line that makes LE-CLIP usable in a Dassl fork's train.py:

    import leclip.plugin  # noqa: F401  LE-CLIP's trainers and datasets, Dassl fixes for torch 2.x

Importing it does exactly this, once per process (a second import does nothing):

1. applies the fixes of `leclip.dassl_compat` whose breakage is present in the
   installed Dassl, torch and numpy (`LECLIP_DASSL_FIXES=none` applies none);
   `FIXES_APPLIED` lists those applied;
2. registers every LE-CLIP trainer, benchmark and evaluator in Dassl's registries and
   adds LE-CLIP's config keys to Dassl's defaults where they are missing;
3. puts back LE-CLIP's config keys that the fork's `extend_cfg` dropped by replacing a
   node (`cfg.TRAINER.COOP = CN()` drops TRAINER.COOP.CSC_FROM_INIT, which LE-CLIP's
   LECoOp reads and its YAMLs set): a config cloned from Dassl's defaults gets its
   missing LE-CLIP keys back before its first merge (YAML, command line) or freeze;
   the fork's own keys and values stay.

It prints one line naming what it registered and the fixes it applied.
`import leclip` alone does none of this. `import leclip.trainers, leclip.datasets`
does 1 and 2 but not 3.
"""
import copy
import importlib.util
import types

from yacs.config import CfgNode

from . import __version__, config, dassl_compat
from .dassl import DASSL_FIXES, DATASET_REGISTRY, DEFAULT_CFG, ENGINE, TRAINER_REGISTRY, EngineError

if ENGINE != "dassl" and importlib.util.find_spec("dassl") is not None:
    raise EngineError(
        "LECLIP_ENGINE=builtin, but this train.py runs on Dassl.pytorch: LE-CLIP's trainers would register in "
        "its built-in engine, out of the fork's reach. Unset LECLIP_ENGINE"
    )

import leclip.datasets  # noqa: E402,F401  registers the benchmarks and their config keys
import leclip.evaluators  # noqa: E402,F401
import leclip.trainers  # noqa: E402,F401

FIXES_APPLIED = list(DASSL_FIXES)
# the config methods a train.py calls after its extend_cfg (Dassl's setup_cfg: the
# dataset and method YAMLs, the command line, freeze)
MERGES = ("merge_from_file", "merge_from_list", "merge_from_other_cfg", "freeze")


def restore_keys(cfg):
    """Put back LE-CLIP's keys that `cfg` lacks (the fork's own keys and values stay)."""
    missing = {key: copy.deepcopy(default) for key, default in config.DECLARED.items() if not config.has_key(cfg, key)}
    config.merge_missing(cfg, missing)


def _restoring_first(name):
    method = getattr(CfgNode, name)

    def restore_then(self, *args, **kwargs):
        if not self.is_frozen():
            restore_keys(self)
        return method(self, *args, **kwargs)

    return restore_then


# on the defaults' root only, so every get_cfg_default() clone has them too (a clone
# copies the instance's attributes, and yacs' type checks still see a plain CfgNode)
for _name in MERGES:
    DEFAULT_CFG.__dict__[_name] = types.MethodType(_restoring_first(_name), DEFAULT_CFG)


def registered(registry):
    """The names LE-CLIP registered in `registry`."""
    return sorted(name for name in registry.registered_names() if registry.get(name).__module__.startswith("leclip."))


def _fixes_line():
    if ENGINE != "dassl":
        return "none (the built-in engine runs)"
    if not dassl_compat.selected_fixes():
        return f"off ({dassl_compat.ENV}=none)"
    return ", ".join(FIXES_APPLIED) or "none needed"


print(
    f"LE-CLIP {__version__} on {ENGINE}: trainers {', '.join(registered(TRAINER_REGISTRY))}; "
    f"datasets {', '.join(registered(DATASET_REGISTRY))}; Dassl fixes applied: {_fixes_line()}"
)
