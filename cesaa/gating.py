"""Noisy top-k gating (Shazeer et al. 2017, arXiv 1701.06538): a pure function and a thin module.

``noisy_top_k_gating`` holds all the math and no parameters; ``NoisyTopKGate`` only owns the gate
weights and builds the gate input.  Algorithm as in davidmrau/mixture-of-experts ``moe.py``.

Shapes: B = batch, Din = gate input width, D = domains, E = experts, k = experts selected per row.

    logits   [B, E]  clean gate logits u W_g (float32, before noise and knock-out masking)
    probs    [B, E]  softmax(logits) over the selectable experts: dense and differentiable (MI loss,
                     analysis).  Knocked-out experts get exactly 0; the rest renormalize.
    gates    [B, E]  softmax over the top-k of H = logits + noise, other entries exactly 0:
                     k non-zeros per row, rows sum to 1.  These weights mix the experts.
                     k = 1 at the trained k = 1: the one weight is softmax(H)[e] <= 1 (Switch
                     Transformer, Fedus et al. 2021), since a softmax over a single value is
                     constantly 1 (no gradient).  k = 1 as an inference override of a model
                     trained with another k: weight exactly 1 (renormalized like every k).
    topk_idx [B, k]  the selected experts, ordered by decreasing H (ties: torch.topk's order)
    load     [E]     expected number of rows routed to each expert.  Noisy training: Shazeer's
                     smooth estimate sum_x P(e in top-k under a fresh noise draw); otherwise the
                     plain selection counts (as floats).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NOISE_FLOOR = 1e-2  # noise std = softplus(u W_noise) + 1e-2, as in the reference ports


@dataclass(frozen=True)
class GateOutput:
    """What a gate computed; see the module docstring for the shapes and meanings."""

    logits: torch.Tensor  # [B, E]
    probs: torch.Tensor  # [B, E]
    gates: torch.Tensor  # [B, E]
    topk_idx: torch.Tensor  # [B, k] long
    # [B, k]: gates at topk_idx (gates.gather(1, topk_idx)), the weights the sparse dispatch
    # reads: taken before the scatter into ``gates``, so the training step's backward does not
    # run the scatter and the gather back
    topk_gates: torch.Tensor
    load: torch.Tensor  # [E]


def softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(logits, dim=-1)`` for a [B, E] gate with few experts: [B, E] -> [B, E].

    Computed over dim 0 of the [E, B] transpose, where the kernel vectorizes over the B rows
    rather than over E (a handful of columns; about 8x faster forward at B = 1024, E = 8 on
    CPU).  The result is a (strided) view of [E, B]; equal to ``F.softmax`` to float rounding.
    """
    return torch.softmax(logits.t(), dim=0).t()  # [B, E]


def check_routing(k: int, num_experts: int, knocked_out: Sequence[int] = ()) -> tuple[int, ...]:
    """Validate k and the knocked-out experts; return the knocked-out indices, sorted and unique.

    Raises ``ValueError`` unless every index is in [0, num_experts) and
    1 <= k <= num_experts - len(knocked_out).
    """
    ko = tuple(sorted({int(i) for i in knocked_out}))
    bad = [i for i in ko if not 0 <= i < num_experts]
    if bad:
        raise ValueError(
            f"knocked_out={list(ko)} has indices {bad} outside [0, num_experts={num_experts})"
        )
    available = num_experts - len(ko)
    if not 1 <= k <= available:
        raise ValueError(
            f"top_k={k} must be in [1, {available}] "
            f"(num_experts={num_experts} minus {len(ko)} knocked out)"
        )
    return ko


def noisy_top_k_gating(
    clean_logits: torch.Tensor,
    noise_logits: torch.Tensor | None,
    k: int,
    training: bool,
    knocked_out: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    trained_k: int | None = None,
    smooth_load: bool = True,
) -> GateOutput:
    """Select k experts per row.

    clean_logits: [B, E] u W_g.  noise_logits: [B, E] u W_noise, or None for no noise; noise is
    added only when ``training`` (so evaluation is deterministic):
        H = clean + N(0, 1) * (softplus(noise_logits) + 1e-2)
    gates = softmax(KeepTopK(H, k)), i.e. the router probabilities of the k selected experts
    renormalized to sum to 1.  One exception: k = 1 when the gate was trained with k = 1
    (``trained_k`` None or 1) weights the selected expert by its router probability softmax(H)[e]
    (Switch Transformer), which a k = 1 model needs to train its gate.  An inference override to
    k = 1 of a model trained with another k (``trained_k`` != 1) therefore gives the top expert
    weight exactly 1: changing k changes only which experts mix, never the scale of the mixture.
    Knocked-out experts are masked to -inf before the top-k and the softmax, so they are never
    selected and get probability 0.  Softmaxes run in (at least) float32.  ``generator`` seeds the
    noise draw.
    ``smooth_load=False`` skips Shazeer's smooth load estimate (only the balance loss reads it)
    and returns the selection counts as ``load``.
    """
    b, e = clean_logits.shape
    ko = check_routing(k, e, knocked_out or ())
    dtype = torch.promote_types(clean_logits.dtype, torch.float32)
    clean = clean_logits.to(dtype)  # [B, E]
    noisy = training and noise_logits is not None

    if noisy:
        # contiguous first: an elementwise op on a column slice of a wider GEMM output (rows of
        # E values, strided) runs an unvectorized loop, ~10x slower at E = 8
        noise_std = F.softplus(noise_logits.to(dtype).contiguous()) + NOISE_FLOOR  # [B, E]
        eps = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=dtype)
        h = clean + eps * noise_std  # [B, E]
    else:
        noise_std = None
        h = clean  # [B, E]

    blocked = None
    selectable = clean
    if ko:
        blocked = torch.zeros(e, dtype=torch.bool, device=clean.device)  # [E]
        blocked[list(ko)] = True
        selectable = clean.masked_fill(blocked, float("-inf"))  # [B, E]
        h = h.masked_fill(blocked, float("-inf"))  # [B, E]

    probs = softmax_rows(selectable)  # [B, E]

    # the smooth load needs the (k+1)-th largest H as the threshold of the selected experts
    smooth = smooth_load and noise_std is not None and k < e - len(ko)
    top_vals, top_idx = h.topk(k + 1 if smooth else k, dim=-1)  # [B, k(+1)], descending
    topk_idx = top_idx[:, :k]  # [B, k]
    if k == 1 and trained_k in (None, 1):
        # a softmax over one value is constantly 1, which would leave the gate without any gradient
        # from the task loss: weight the one expert by its router probability (Switch Transformer)
        topk_gates = softmax_rows(h).gather(1, topk_idx)  # [B, 1], in (0, 1]
    else:
        topk_gates = _softmax_descending(top_vals[:, :k])  # [B, k]
    gates = torch.zeros_like(h).scatter(1, topk_idx, topk_gates)  # [B, E]

    if smooth:
        p_in = _prob_in_top_k(clean, h, noise_std, top_vals, k)  # [B, E]
        if blocked is not None:
            p_in = p_in.masked_fill(blocked, 0.0)
        load = p_in.sum(dim=0)  # [E]
    else:
        flat = topk_idx.reshape(-1)  # [B*k]; a scatter-add, not bincount (which syncs on CUDA)
        load = torch.zeros(e, dtype=dtype, device=h.device).index_add_(
            0, flat, torch.ones(flat.shape, dtype=dtype, device=h.device)
        )  # [E]
    return GateOutput(
        logits=clean,
        probs=probs,
        gates=gates,
        topk_idx=topk_idx,
        load=load,
        topk_gates=topk_gates,
    )


def _softmax_descending(v: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim of rows sorted in descending order ([B, k], k small).

    Without autograd, exp(v - v[:, :1]) / sum: v[:, 0] is the row maximum, and these elementwise
    ops beat the softmax kernel, whose last-dim loop is slow for a handful of columns.  With
    autograd, the softmax kernel over the transpose (:func:`softmax_rows`; its fused backward
    is the cheaper one).  Equal to float rounding.
    """
    if torch.is_grad_enabled() and v.requires_grad:
        return softmax_rows(v)
    z = (v - v[:, :1]).exp_()  # [B, k]
    return z.div_(z.sum(dim=-1, keepdim=True))


def _prob_in_top_k(
    clean: torch.Tensor,
    noisy: torch.Tensor,
    noise_std: torch.Tensor,
    top_vals: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """P(expert e is in the top k of row x under a fresh noise draw on e alone), differentiable.

    clean, noisy, noise_std: [B, E]; top_vals: [B, k+1] the largest noisy values, descending.
    An expert now in the top k stays there if its value beats the (k+1)-th largest; an expert now
    out gets in if it beats the k-th largest.  Returns [B, E].
    """
    threshold_if_in = top_vals[:, k : k + 1]  # [B, 1]
    threshold_if_out = top_vals[:, k - 1 : k]  # [B, 1]
    prob_if_in = _normal_cdf((clean - threshold_if_in) / noise_std)  # [B, E]
    prob_if_out = _normal_cdf((clean - threshold_if_out) / noise_std)  # [B, E]
    return torch.where(noisy > threshold_if_in, prob_if_in, prob_if_out)


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF (as ``torch.distributions.Normal(0, 1).cdf``, whose argument validation
    reads a tensor back to the host)."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


class NoisyTopKGate(nn.Module):
    """Owns W_g and W_noise (zero-initialized: the gate starts uniform) and builds the gate input.

    gate_input:
      - "concat":     u = [x, e_d],  W: [Din + De, E]
      - "per_domain": u = x, one matrix per domain gathered by the row's domain,  W: [D, Din, E]
      - "features":   u = x,  W: [Din, E]
    ``noisy=False`` drops W_noise (plain top-k gating).
    """

    def __init__(
        self,
        in_dim: int,
        domain_dim: int,
        num_experts: int,
        num_domains: int,
        gate_input: str = "concat",
        noisy: bool = True,
    ) -> None:
        super().__init__()
        shapes = {
            "concat": (in_dim + domain_dim, num_experts),
            "per_domain": (num_domains, in_dim, num_experts),
            "features": (in_dim, num_experts),
        }
        if gate_input not in shapes:
            raise ValueError(f"gate_input={gate_input!r} must be one of {list(shapes)}")
        self.gate_input = gate_input
        self.num_experts = num_experts
        self.domain_dim = domain_dim
        self.w_gate = nn.Parameter(torch.zeros(shapes[gate_input]))
        self.w_noise = nn.Parameter(torch.zeros(shapes[gate_input])) if noisy else None

    def _project(self, w: torch.Tensor, u: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        if self.gate_input == "per_domain":
            # every domain's logits, then each row's own: [B, D, E] instead of gathering a
            # [B, Din, E] copy of the weights
            every = torch.einsum("bi,die->bde", u, w)  # [B, D, E]
            index = domain.view(-1, 1, 1).expand(-1, 1, w.shape[2])  # [B, 1, E]
            return every.gather(1, index).squeeze(1)  # [B, E]
        return u @ w  # [B, E]

    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The gate as one linear map of [x, e_d], for callers that fuse it into a wider GEMM.

        Returns ``(w_x [Din, n*E], w_e [De, n*E] or None)`` with n = 2 (W_g then W_noise) when a
        noise draw follows (training with W_noise), else n = 1 (W_g): the logits of
        ``gate_from_logits`` are ``x @ w_x + e_d @ w_e`` (``w_e`` only for "concat").  None for
        "per_domain" (one matrix per domain: no single linear map).
        """
        if self.gate_input == "per_domain":
            return None
        ws = [self.w_gate]
        if self.training and self.w_noise is not None:
            ws.append(self.w_noise)
        din = self.w_gate.shape[0] - (0 if self.gate_input == "features" else self.domain_dim)
        w_x = torch.cat([w[:din] for w in ws], dim=1) if len(ws) > 1 else ws[0][:din]
        if self.gate_input == "features":
            return w_x, None
        w_e = torch.cat([w[din:] for w in ws], dim=1) if len(ws) > 1 else ws[0][din:]
        return w_x, w_e  # [Din, n*E], [De, n*E]

    def gate_from_logits(
        self,
        logits: torch.Tensor,
        k: int,
        knocked_out: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        trained_k: int | None = None,
        smooth_load: bool = True,
    ) -> GateOutput:
        """``forward`` from the projected logits [B, n*E] laid out as ``stacked_weights``'s."""
        e = self.num_experts
        noise = logits[:, e:] if logits.shape[1] > e else None  # [B, E]
        return noisy_top_k_gating(
            logits[:, :e],
            noise,
            k,
            self.training,
            knocked_out,
            generator,
            trained_k=trained_k,
            smooth_load=smooth_load,
        )

    def forward(
        self,
        x: torch.Tensor,
        domain_emb: torch.Tensor,
        domain: torch.Tensor,
        k: int,
        knocked_out: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        trained_k: int | None = None,
        smooth_load: bool = True,
    ) -> GateOutput:
        # x: [B, Din], domain_emb: [B, De], domain: [B] long; trained_k: see noisy_top_k_gating
        u = torch.cat([x, domain_emb], dim=1) if self.gate_input == "concat" else x  # [B, Din(+De)]
        clean = self._project(self.w_gate, u, domain)  # [B, E]
        noise = None
        if self.training and self.w_noise is not None:
            noise = self._project(self.w_noise, u, domain)  # [B, E]
        return noisy_top_k_gating(
            clean,
            noise,
            k,
            self.training,
            knocked_out,
            generator,
            trained_k=trained_k,
            smooth_load=smooth_load,
        )
