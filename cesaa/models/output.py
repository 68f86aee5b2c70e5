"""The one object every model's ``forward`` returns, and the inference-time routing override."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class RoutingOverride:
    """Change routing at inference, without retraining (the dashboard's live ablations).

    - ``top_k``: select this many experts per row instead of the trained k (for dense gates,
      MMoE and PLE, the trained k is every expert of the row's gate).  Only the set of experts
      changes: the selected experts' gate probabilities are renormalized to sum to 1, for every
      k >= 1 (so k = 1 on a model trained with k = 2 weights the top expert exactly 1, not by its
      probability).  The trained k (or ``None``) reproduces the trained predictions bit for bit,
      including a model trained with k = 1, whose one expert keeps its Switch-style weight
      p_max.  Same rule for CESAA, sparse MoE, MMoE and PLE.
    - ``use_shared``: False switches the always-on shared experts off.
    - ``knocked_out``: expert indices that may not be selected; their gate mass is renormalized over
      the remaining experts.  Indices are the model's expert indices (``probs`` columns); for PLE
      the global index over D * ple_specific domain-specific experts then the shared ones, so one
      index removes exactly one network.
    """

    top_k: int | None = None
    use_shared: bool = True
    knocked_out: tuple[int, ...] = ()

    @property
    def is_identity(self) -> bool:
        return self.top_k is None and self.use_shared and not self.knocked_out


@dataclass
class ModelOutput:
    """What a forward pass computed.

    Shapes: B = batch, E = selectable (domain) experts, k = experts selected per row, H = expert width.

    - ``logit``: [B] logit of the click/positive probability (for retrieval: the user embedding is in
      ``embedding``).
    - ``probs``: [B, E] dense gate probabilities over the selectable experts (None for models without
      a gate). For MMoE/PLE these are the softmax gate of the row's own domain; for PLE over the
      global expert index (D * ple_specific domain-specific experts, then the shared ones), zero
      on the other domains' specific experts.
    - ``gates``: [B, E] the weights actually used to mix experts (sparse for top-k models: exactly k
      non-zeros per row; equal to ``probs`` for dense gates).
    - ``topk_idx``: [B, k] selected expert indices (None for dense gates).
    - ``aux_loss``: scalar, the weighted auxiliary loss the trainer adds to BCE
      (``alpha * L_MI + beta * L_balance`` for CESAA; 0 for models without one).
    - ``losses``: raw, unweighted auxiliary terms for logging (e.g. ``{"mi": I(D;E), "balance": ...}``).
    - ``expert_outputs``: [B, E, H] every domain expert's output, only when requested (PLE: the
      row's own gate's experts, zeros on the other domains' specific experts, which it never runs).
    - ``shared_outputs``: [B, S, H] every shared expert's output, only when requested.
    """

    logit: torch.Tensor
    probs: torch.Tensor | None = None
    gates: torch.Tensor | None = None
    topk_idx: torch.Tensor | None = None
    aux_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    expert_outputs: torch.Tensor | None = None
    shared_outputs: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
