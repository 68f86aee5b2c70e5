"""torch-rechub's multi-task MMoE and PLE as multi-domain models, side by side with ours.

torch-rechub (0.9.0) has no multi-domain MMoE/PLE; its multi-task models are the closest faithful
peers: one task per domain, and each row is read from its own domain's head.  The adapter changes
nothing in their networks (embeddings initialized N(0, 1e-4), Linear-BatchNorm-ReLU MLPs, softmax
gates) except the last layer: their ``PredictionLayer`` applies a sigmoid, which we replace by the
identity so the tower's logit goes through our trainer's ``binary_cross_entropy_with_logits`` (the
same loss as their BCE on probabilities, numerically safer).

The adapters are registered in the ``cesaa`` model registry under ``rechub_mmoe`` and
``rechub_ple``, so ``cesaa.train.train`` trains them with exactly the protocol of our models: same
split, features, optimizer, early stopping and evaluation.  Dimensions come from ``ModelConfig``:
experts ``expert_hidden + (expert_dim,)``, towers ``tower_hidden`` then 1, ``embed_dim``,
``mmoe_experts`` (0 = one per domain), ``ple_levels`` / ``ple_specific`` / ``ple_shared``.
They declare the search spaces of our MMoE and PLE, so ``cesaa bench --setup bench._rechub:register``
tunes them with the same budget over the same choices.
"""

from __future__ import annotations

import torch
from torch import nn

from cesaa.config import ModelConfig
from cesaa.features import FeatureSpec
from cesaa.models import registry, search_spaces
from cesaa.models.baselines.blocks import reject_routing
from cesaa.models.output import ModelOutput, RoutingOverride

NAMES = ("rechub_mmoe", "rechub_ple")


class _RechubMultiDomain(nn.Module):
    kind = ""

    def __init__(self, cfg: ModelConfig, spec: FeatureSpec) -> None:
        super().__init__()
        from torch_rechub.basic.features import DenseFeature, SparseFeature
        from torch_rechub.models.multi_task import MMOE, PLE

        self.cat_names = spec.cat_names
        self.num_names = spec.num_names
        features = [
            SparseFeature(n, vocab_size=c, embed_dim=cfg.embed_dim)
            for n, c in zip(spec.cat_names, spec.cat_cardinalities, strict=True)
        ] + [DenseFeature(n) for n in spec.num_names]
        d = spec.num_domains
        tasks = ["classification"] * d
        expert = {"dims": [*cfg.expert_hidden, cfg.expert_dim], "dropout": cfg.dropout}
        towers = [{"dims": list(cfg.tower_hidden), "dropout": cfg.dropout} for _ in range(d)]
        if self.kind == "mmoe":
            self.net = MMOE(features, tasks, cfg.mmoe_experts or d, expert, towers)
        else:
            self.net = PLE(
                features, tasks, cfg.ple_levels, cfg.ple_specific, cfg.ple_shared, expert, towers
            )
        # their towers end in a sigmoid; read the logit before it (see the module docstring)
        self.net.predict_layers = nn.ModuleList(nn.Identity() for _ in range(d))

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        domain: torch.Tensor,
        routing: RoutingOverride | None = None,
        return_expert_outputs: bool = False,
    ) -> ModelOutput:
        # cat: [B, C] long, num: [B, M] float, domain: [B] long -> their dict of [B] columns
        reject_routing(routing, self.model_name)
        x = {n: cat[:, i] for i, n in enumerate(self.cat_names)}
        x.update({n: num[:, j] for j, n in enumerate(self.num_names)})
        logits = self.net(x)  # [B, D]: every domain's head
        logit = logits.gather(1, domain.unsqueeze(1)).squeeze(1)  # [B]: the row's own domain
        return ModelOutput(logit=logit, aux_loss=logit.new_zeros(()))


class RechubMMoE(_RechubMultiDomain):
    """torch-rechub ``MMOE``, one task per domain."""

    kind = "mmoe"


class RechubPLE(_RechubMultiDomain):
    """torch-rechub ``PLE``, one task per domain."""

    kind = "ple"


def register() -> str | None:
    """Register the adapters (once).  Returns None, or why torch-rechub is unavailable."""
    try:
        import torch_rechub  # noqa: F401
    except ImportError as e:
        return f"torch_rechub is not importable ({e}); install the 'bench' extra"
    if "rechub_mmoe" not in registry.model_names():
        # the same search spaces as our MMoE / PLE: equal tuning budgets over equal choices
        registry.register(
            "rechub_mmoe", "torch-rechub MMOE, one task per domain", search_spaces.mmoe
        )(RechubMMoE)
        registry.register("rechub_ple", "torch-rechub PLE, one task per domain", search_spaces.ple)(
            RechubPLE
        )
    return None
