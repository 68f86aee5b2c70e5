"""Auxiliary losses of the mixture-of-experts models, as stateless functions.

Shapes: B = batch, D = domains, E = experts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def joint_domain_expert(
    probs: torch.Tensor, domain: torch.Tensor, num_domains: int
) -> torch.Tensor:
    """Joint distribution P(D, E) on a batch:  M[d, e] = (1/B) * sum_{x: dom(x)=d} p(x)_e.

    probs: [B, E] rows summing to 1; domain: [B] long in [0, D).  Returns M: [D, E], summing to 1.
    Differentiable in ``probs``.
    """
    b, e = probs.shape
    p = probs if probs.dtype == torch.float64 else probs.float()  # float32 at least
    m = p.new_zeros(num_domains, e).index_add(
        0, domain, p
    )  # [D, E] sums of probabilities per domain
    return m / max(b, 1)


def _mi_parts(joint: torch.Tensor, eps: float) -> tuple[torch.Tensor, ...]:
    """The intermediates of I(D; E) shared by :func:`mutual_information` and
    :func:`mi_and_gradient`: (m normalized, p_d [D, 1], p_e [1, E], log ratio, terms, the
    normalizer (1 for an all-zero joint), whether the joint sums to more than 0)."""
    m = joint if joint.dtype == torch.float64 else joint.float()  # float32 at least
    total = m.sum()
    positive = total > 0  # a tensor, not a Python bool: no host sync
    total = torch.where(positive, total, torch.ones_like(total))
    m = m / total  # an all-zero joint stays 0
    pd = m.sum(dim=1, keepdim=True)  # [D, 1]
    pe = m.sum(dim=0, keepdim=True)  # [1, E]
    log_ratio = torch.log((m / (pd * pe).clamp_min(eps)).clamp_min(eps))  # [D, E]
    terms = torch.where(m > 0, m * log_ratio, torch.zeros_like(m))
    return m, pd, pe, log_ratio, terms, total, positive


def mutual_information(joint: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """I(D; E) = sum_{d,e} M[d,e] log(M[d,e] / (P(d) P(e))) in nats, from a joint M: [D, E].

    ``joint`` need not be normalized (it is divided by its sum).  Bounds: 0 <= I <= min(log D, log E).
    Zero cells contribute 0 (the limit of m log m).  Differentiable; this one function serves both the
    training loss and the analysis package's soft MI.
    """
    *_, terms, _, positive = _mi_parts(joint, eps)
    raw = terms.sum()
    return torch.where(positive, raw.clamp_min(0.0), torch.zeros_like(raw))


def mi_loss(
    probs: torch.Tensor,
    domain: torch.Tensor,
    num_domains: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_MI = -I(D; E) on the batch (Mod-Squad, with tasks -> domains).  Returns (loss, I) — I for logging.

    ``reduce``: an optional differentiable map of the batch's unnormalized joint S[d, e] =
    sum_{x: dom(x)=d} p(x)_e (e.g. a sum over data-parallel processes, so that I is the global
    batch's; see ``cesaa.distributed.global_joint_reducer``).  None: this batch only, through
    :class:`_BatchMutualInformation` (the same value, its gradient in closed form: a few
    operations where autograd through :func:`mutual_information` records about seventy).
    """
    if reduce is None:
        mi = _BatchMutualInformation.apply(probs, domain, num_domains)
        return -mi, mi.detach()
    joint = joint_domain_expert(probs, domain, num_domains)
    joint = reduce(joint * probs.shape[0])  # [D, E] sums; mutual_information normalizes
    mi = mutual_information(joint)
    return -mi, mi.detach()


def mi_and_gradient(joint: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mutual_information` of the joint M [D, E] (the same operations, the same value) and
    its gradient dI/dM [D, E] in closed form, from the same intermediates.

    With m = M / sum(M), row and column marginals p_d, p_e and I = sum_{m > 0} m log(m / (p_d p_e)):
    dI/dm[d, e] = [m > 0] (log(m / (p_d p_e)) + 1) - [p_d > 0] - [p_e > 0], and through the
    normalization dI/dM = (dI/dm - sum(m * dI/dm)) / sum(M).  Zero where I is clamped (an
    all-zero joint, or a rounding-negative sum).  The clamps at ``eps`` are not differentiated
    (they act only where p_d p_e < eps).
    """
    m, pd, pe, log_ratio, terms, total, positive = _mi_parts(joint, eps)
    nonzero = m > 0
    dm = torch.where(nonzero, log_ratio + 1, torch.zeros_like(m)) - (pd > 0).to(m.dtype)
    dm = dm - (pe > 0).to(m.dtype)  # [D, E]
    raw = terms.sum()
    mi = torch.where(positive, raw.clamp_min(0.0), torch.zeros_like(raw))  # mutual_information's
    live = (positive & (raw >= 0)).to(m.dtype)  # where the clamps pass the gradient
    return mi, (dm - (dm * m).sum()) * (live / total)  # [], [D, E]


class _BatchMutualInformation(torch.autograd.Function):
    """I(D; E) of a batch's routing probabilities, differentiable in ``probs`` (closed form).

    Forward: ``mutual_information(joint_domain_expert(probs, domain, D))``, the same value.
    Backward: probs[b, e] enters M[domain[b], e] with weight 1/B, so dI/dprobs[b] =
    ``mi_and_gradient(M)[1][domain[b]] / B``.
    """

    @staticmethod
    def forward(ctx, probs, domain, num_domains):  # probs [B, E], domain [B] long -> I []
        joint = joint_domain_expert(probs, domain, num_domains)  # [D, E]
        mi, grad_joint = mi_and_gradient(joint)
        ctx.save_for_backward(domain, grad_joint)
        ctx.scale = 1.0 / max(probs.shape[0], 1)
        ctx.dtype = probs.dtype
        return mi

    @staticmethod
    def backward(ctx, grad):
        domain, grad_joint = ctx.saved_tensors
        g = (grad_joint * (grad * ctx.scale)).index_select(0, domain)  # [B, E]
        return g.to(ctx.dtype), None, None


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation  var(x) / mean(x)^2 with the population variance
    (ddof=0, as ``analysis.load.load_balance``'s CV; 0 for a single element)."""
    x = x.float()
    if x.numel() <= 1:
        return x.new_zeros(())
    return x.var(correction=0) / (x.mean() ** 2 + eps)


def balance_loss(gates: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
    """Shazeer et al. (2017):  CV(Importance)^2 + CV(Load)^2.

    gates: [B, E] sparse gate weights (Importance_e = sum_x G(x)_e); load: [E] smooth expected number of
    rows routed to each expert (Load_e = sum_x P(x, e)).  0 when perfectly balanced.
    """
    return cv_squared(gates.sum(dim=0)) + cv_squared(load)
