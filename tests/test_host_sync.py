"""No model reads a tensor back to the host inside its forward or backward pass.

On CPU a host read costs nothing, but on an accelerator every ``.item()``, ``.tolist()`` or Python
``if`` on a tensor stalls the device queue.  Every Python-level read is patched to fail while each
registered model runs a training forward + backward and an eval forward.  (Reads inside C++
kernels are not visible here; the ones the code used to make, ``bincount`` on CUDA, were replaced.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cesaa.features import FeatureSpec
from cesaa.models import build_model, default_config, model_names

SPEC = FeatureSpec(("user", "item", "ctx"), (10, 12, 8), ("n0", "n1"), ("d0", "d1", "d2"))
B = 48
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch():
    g = torch.Generator().manual_seed(0)
    cat = torch.stack([torch.randint(0, c, (B,), generator=g) for c in SPEC.cat_cardinalities], 1)
    num = torch.randn(B, SPEC.num_numeric, generator=g)
    domain = torch.arange(B) % 3
    label = torch.randint(0, 2, (B,), generator=g).float()
    return cat, num, domain, label


def _refuse_reads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host inside the model")

    for method in READS:
        monkeypatch.setattr(torch.Tensor, method, refuse)


VARIANTS = [(n, {}) for n in model_names() if not n.startswith("rechub")] + [
    ("cesaa", {"beta": 0.01, "gate_input": "per_domain"}),
    ("cesaa", {"top_k": 1, "head": "per_domain", "fusion": "concat"}),
]


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=[f"{n}{kw}" for n, kw in VARIANTS])
def test_forward_and_backward_read_nothing_back(monkeypatch, name: str, kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(default_config(name, **kw), SPEC)
    cat, num, domain, label = _batch()
    model(cat, num, domain)  # first call: one-time probes (e.g. grouped GEMM support) may read
    _refuse_reads(monkeypatch)
    out = model.train()(cat, num, domain)
    loss = F.binary_cross_entropy_with_logits(out.logit, label) + out.aux_loss
    loss.backward()
    with torch.no_grad():
        model.eval()(cat, num, domain)
    monkeypatch.undo()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
