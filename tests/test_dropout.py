"""The fast CPU dropout of dt_fast.model: the distribution and gradient of nn.Dropout, reproducible by seed."""

import numpy as np
import pytest
import torch

import dt_fast
from dt_fast.model import Dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_keeps_one_minus_p_with_inverse_scaling(p: float) -> None:
    mask = np.empty(1_000_003, dtype=np.float32)  # odd size: no vector-width assumptions
    dt_fast._C.dropout_mask(mask, p, 12345)
    kept = mask != 0
    assert set(np.unique(mask)) == {0.0, np.float32(1) / (np.float32(1) - np.float32(p))}
    sigma = np.sqrt(p * (1 - p) / mask.size)
    assert abs((1 - kept.mean()) - p) < 5 * sigma
    # neighbouring elements are independent: the joint drop rate of pairs is p^2
    both = (~kept[:-1] & ~kept[1:]).mean()
    assert abs(both - p * p) < 5 * np.sqrt(p * p * (1 - p * p) / mask.size)


def test_masks_differ_by_seed_and_repeat_for_the_same_seed() -> None:
    a, b, c = (np.empty(10_000, np.float32) for _ in range(3))
    dt_fast._C.dropout_mask(a, 0.1, 1)
    dt_fast._C.dropout_mask(b, 0.1, 1)
    dt_fast._C.dropout_mask(c, 0.1, 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_module_is_reproducible_under_manual_seed_and_its_gradient_is_the_mask() -> None:
    drop = Dropout(0.1).train()
    x = torch.randn(64, 60, 128, requires_grad=True)
    torch.manual_seed(0)
    y1 = drop(x)
    torch.manual_seed(0)
    y2 = drop(x)
    assert torch.equal(y1, y2)
    y1.sum().backward()
    values = x.grad.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.9)
    torch.testing.assert_close(x.grad * x.detach(), y2.detach())
    assert torch.equal(drop.eval()(x), x)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        dt_fast._C.dropout_mask(np.empty(4, np.float32), 1.0, 0)
    with pytest.raises(
        ValueError, match="dropout_mask: out must be a writeable C-contiguous float32 array, got float64"
    ):  # not converted to a temporary: the mask would be lost
        dt_fast._C.dropout_mask(np.empty(4, np.float64), 0.1, 0)
