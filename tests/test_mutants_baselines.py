"""What mutmut's survivors in the baseline trainers showed untested: each built model on
the trainer's device, CLIP-Adapter's bad-key message in full, and LoCoOp's entropy term
as float32 when no region is a non-label one (whatever the logits' precision)."""
import pytest
import torch

from leclip.dassl import get_cfg_default
from leclip.trainers.clip_adapter import LECLIPAdapter
from leclip.trainers.locoop import non_label_region_entropy
from test_wiring import LEARNABLE, backbone, build  # noqa: F401 (backbone: a fixture)


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_build_model_moves_the_model_to_the_trainers_device(backbone, tmp_path, name):  # noqa: F811
    trainer = build(backbone, tmp_path, name)
    trainer.device = torch.device("meta")  # any device but the CPU the CLIP is loaded on
    trainer.setup_optimization = lambda name, module: None
    trainer.build_model()
    learnable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert learnable and {p.device.type for p in learnable} == {"meta"}


@pytest.mark.parametrize("ratio, reduction", [(1.5, 4), (0.2, 0)])
def test_clip_adapter_bad_keys_message(ratio, reduction):
    cfg = get_cfg_default()
    cfg.TRAINER.CLIP_ADAPTER.RATIO, cfg.TRAINER.CLIP_ADAPTER.REDUCTION = ratio, reduction
    with pytest.raises(ValueError, match=rf"^TRAINER\.CLIP_ADAPTER: RATIO={ratio}, REDUCTION={reduction}: RATIO is a "
                                         r"blend weight in \[0, 1\] and REDUCTION at least 1 \(released: 0\.2, 4\)$"):
        object.__new__(LECLIPAdapter).check_cfg(cfg)


def test_locoop_entropy_without_non_label_regions_is_a_float32_zero():
    local = torch.randn(2, 3, 4).half()  # [B, N, K]; top_k = K: every region ranks its label
    zero = non_label_region_entropy(local, torch.tensor([0, 3]), top_k=4)
    assert zero.dtype == torch.float32 and zero.item() == 0.0
