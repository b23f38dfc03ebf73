"""The residual adapter's defaults, bottleneck width and dtype handling, by hand."""
import torch

from leclip.adapters import ResidualAdapter


def set_weights(adapter, down, up):
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor(down))
        adapter.fc[2].weight.copy_(torch.tensor(up))


def test_default_is_clip_adapters_reduction_4_and_ratio_02():
    adapter = ResidualAdapter(8)
    assert adapter.fc[0].weight.shape == (2, 8) and adapter.fc[2].weight.shape == (8, 2)
    set_weights(adapter, [[1.0] + [0.0] * 7, [0.0] * 8], [[1.0, 0.0]] + [[0.0, 0.0]] * 7)
    x = torch.tensor([[2.0, 1, 1, 1, 1, 1, 1, 1]])
    # A(x) = (2, 0, ..., 0); 0.2 * A(x) + 0.8 * x
    expected = 0.8 * x
    expected[0, 0] += 0.2 * 2.0
    assert torch.allclose(adapter(x), expected)


def test_bottleneck_is_at_least_one_unit():
    assert ResidualAdapter(4, reduction=4).fc[0].out_features == 1
    assert ResidualAdapter(3, reduction=4).fc[0].out_features == 1


def test_features_of_another_dtype_go_through_the_adapter_in_its_own():
    adapter = ResidualAdapter(2, reduction=1, ratio=0.5)
    set_weights(adapter, [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 2.0]])
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    # A(x) = (1, 6) in fp32; 0.5 * A(x) + 0.5 * x = (1, 4.5), the blend in the input's fp64
    out = adapter(x)
    assert out.dtype == torch.float64
    assert torch.allclose(out, torch.tensor([[1.0, 4.5]], dtype=torch.float64))
