"""bench.roofline counts a domain-grouped layer's FLOPs on each group's own rows (closed form), not
on the package fallback's every-group-on-every-row shapes."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.roofline import exact_grouped_linear
from cesaa.grouped_gemm import forced_fallback
from cesaa.models.baselines import grouped

ROWS, IN, OUT, G = 10, 6, 5, 3


def _case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, IN, generator=g, requires_grad=True)
    w = torch.randn(G, IN, OUT, generator=g, requires_grad=True)
    b = torch.randn(G, OUT, generator=g, requires_grad=True)
    group = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # sorted: 2, 4 and 4 rows
    return x, w, b, group, grouped.group_ends(group, G)


def test_exact_grouped_linear_is_each_row_through_its_own_group() -> None:
    x, w, b, group, ends = _case()
    want = torch.stack([x[r] @ w[group[r]] + b[group[r]] for r in range(ROWS)])
    torch.testing.assert_close(exact_grouped_linear(x, w, b, group, ends), want)


def test_the_count_is_each_rows_own_work_forward_and_backward() -> None:
    x, w, b, group, ends = _case()
    with FlopCounterMode(display=False) as exact:
        exact_grouped_linear(x, w, b, group, ends).sum().backward()
    # forward 2*ROWS*IN*OUT; backward: the input's and the weight's gradient, as much again each
    assert exact.get_total_flops() == 3 * 2 * ROWS * IN * OUT
    with (
        forced_fallback(),
        FlopCounterMode(display=False) as fallback,
    ):  # as the roofline counted it
        grouped.grouped_linear(x, w, b, group, ends).sum().backward()
    assert fallback.get_total_flops() == G * exact.get_total_flops()  # every group on every row


def test_a_ple_models_count_uses_the_exact_grouped_layers() -> None:
    from bench.roofline import flops_per_row
    from cesaa.data.table import EncodedTable
    from cesaa.features import FeatureSpec
    from cesaa.models import build_model, default_config

    spec = FeatureSpec(("u", "i"), (7, 9), ("n0",), ("d0", "d1", "d2"))
    g = torch.Generator().manual_seed(0)
    n = 12
    table = EncodedTable(
        cat=torch.stack(
            [torch.randint(0, 7, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)], 1
        ),
        num=torch.randn(n, 1, generator=g),
        domain=torch.arange(n) % 3,
        label=(torch.arange(n) % 2).float(),
    )
    torch.manual_seed(0)
    model = build_model(default_config("ple"), spec)
    exact = flops_per_row(model, table, n)
    b = table.subset(torch.arange(n))
    with forced_fallback(), FlopCounterMode(display=False) as every:
        out = model.train()(b.cat, b.num, b.domain)
        torch.nn.functional.binary_cross_entropy_with_logits(out.logit, b.label).backward()
    assert 0 < exact < every.get_total_flops() / n  # the fallback ran every domain on every row
