"""What routing a model has: how many experts, which kind each is, top-k or dense gate, shared experts.

The analysis needs to know, before running a model, whether a re-routing experiment makes sense
(knocking out experts needs a gate; a k curve needs a gate with two experts or more) and what each
expert index is.  The answer is read from the model's attributes, never from a forward pass.
``not_applicable`` says in one line why a model/measure pair has no number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

# the measures whose applicability depends on the model (see ``not_applicable``)
MEASURES = ("routing", "knockout", "shared_knockout", "k_curve", "alpha", "load_balance")


def routing_capabilities(model: nn.Module) -> dict[str, Any]:
    """The routing a model supports, as a plain (JSON-safe) dict.

    Keys:

    - ``name``: the registry name (``model.model_name``), else the class name.
    - ``num_experts``: E, the columns of the model's gate output (``probs`` [B, E]), one per expert
      network (for PLE the global index: D * ple_specific domain-specific experts, then the shared
      ones); 0 without a gate.
    - ``expert_kinds``: one label per expert index: ``"routed"`` (any domain's gate may weigh it:
      CESAA, sparse MoE, MMoE), ``"shared"`` (PLE's shared experts, in every domain's gate) or
      ``"domain:<d>"`` (only domain d's gate can weigh it: PLE's domain-specific experts).
    - ``row_experts``: how many experts one row's gate chooses among (E, or S + Sh for PLE): the
      largest k of a k override.
    - ``top_k``: the trained k of a top-k gate; ``None`` for dense gates and gate-less models
      (a dense gate's trained k is ``row_experts``).
    - ``num_shared``: shared experts that ``RoutingOverride(use_shared=False)`` switches off
      (CESAA's always-on shared experts; PLE's shared experts, which are gate columns).
    - ``always_on``: experts that run on every row outside the gate (CESAA's shared experts; 0 for
      PLE, whose shared experts are weighed by the gate).
    - ``has_gate``: the model returns gate probabilities and honours ``knocked_out``.
    - ``has_topk``: the gate selects k of E experts (CESAA, sparse MoE), so the model trains with
      the MI loss and fewer experts run at a smaller k.

    Recognized: the CESAA family (an attribute ``gate`` with ``num_experts`` plus a ``cfg``), PLE
    (``levels`` of CGC levels), MMoE and any other model with an integer ``num_experts`` (dense
    gate); everything else has no gate (mlp, shared_bottom, star).  A model may label its experts
    with an ``expert_kinds()`` method (default: every expert ``"routed"``).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = str(getattr(model, "model_name", type(model).__name__))
    cfg = getattr(model, "cfg", None)
    gate = getattr(model, "gate", None)
    if cfg is not None and gate is not None and hasattr(gate, "num_experts"):
        s = _count(getattr(model, "shared", None))
        return _caps(model, name, int(gate.num_experts), int(cfg.top_k), s, s, True)
    levels = getattr(model, "levels", None)
    if levels is not None and len(levels) and hasattr(levels[-1], "sh"):
        last = levels[-1]
        e = int(getattr(model, "num_experts", last.s + last.sh))
        return _caps(model, name, e, None, int(last.sh), 0, False)
    n = getattr(model, "num_experts", None)
    if isinstance(n, int) and n > 0:
        return _caps(model, name, n, None, 0, 0, False)
    return _caps(model, name, 0, None, 0, 0, False)


def _count(shared: Any) -> int:
    return 0 if shared is None else int(getattr(shared, "num_experts", 0))


def _caps(
    model: nn.Module, name: str, e: int, k: int | None, s: int, always_on: int, has_topk: bool
) -> dict[str, Any]:
    kinds_fn = getattr(model, "expert_kinds", None)
    kinds = [str(x) for x in kinds_fn()] if callable(kinds_fn) else ["routed"] * e
    if len(kinds) != e:
        raise ValueError(f"model {name!r}: expert_kinds() has {len(kinds)} labels for {e} experts")
    return {
        "name": name,
        "num_experts": e,
        "expert_kinds": kinds,
        "row_experts": _row_experts(kinds),
        "top_k": k,
        "num_shared": s,
        "always_on": always_on,
        "has_gate": e > 0,
        "has_topk": has_topk,
    }


def _row_experts(kinds: Sequence[str]) -> int:
    common = sum(1 for x in kinds if not x.startswith("domain:"))
    per_domain: dict[str, int] = {}
    for x in kinds:
        if x.startswith("domain:"):
            per_domain[x] = per_domain.get(x, 0) + 1
    return common + (min(per_domain.values()) if per_domain else 0)


def experts_left(caps: dict[str, Any], knocked_out: Sequence[int] = ()) -> int:
    """The fewest experts any row's gate has left when ``knocked_out`` (expert indices) are
    knocked out: the largest k an override may ask for.  For PLE, knocking out domain d's
    specific expert leaves the other domains' gates whole."""
    kinds = caps["expert_kinds"]
    off = {int(i) for i in knocked_out}
    bad = sorted(i for i in off if not 0 <= i < len(kinds))
    if bad:
        raise ValueError(f"knocked_out has indices {bad} outside [0, {len(kinds)})")
    common = sum(1 for i, x in enumerate(kinds) if not x.startswith("domain:") and i not in off)
    left: dict[str, int] = {}
    for i, x in enumerate(kinds):
        if x.startswith("domain:"):
            left[x] = left.get(x, 0) + (i not in off)
    return common + (min(left.values()) if left else 0)


def expert_names(caps: dict[str, Any], domain_names: Sequence[str] | None = None) -> list[str]:
    """One display name per expert index: ``"expert i"`` for routed experts, ``"expert i (shared)"``
    and ``"expert i (<domain> only)"`` for PLE's shared and domain-specific experts (the domain's
    name from ``domain_names`` when given, else ``domain <d>``)."""
    names = []
    for i, kind in enumerate(caps["expert_kinds"]):
        if kind.startswith("domain:"):
            d = int(kind.split(":", 1)[1])
            dom = domain_names[d] if domain_names is not None and d < len(domain_names) else None
            names.append(f"expert {i} ({dom if dom is not None else f'domain {d}'} only)")
        elif kind == "shared":
            names.append(f"expert {i} (shared)")
        else:
            names.append(f"expert {i}")
    return names


def not_applicable(caps: dict[str, Any], measure: str) -> str | None:
    """``None`` when ``measure`` applies to the model of ``caps``, else one line saying why not.

    Measures (``MEASURES``): ``routing`` (P(expert|domain), MI, entropies, embeddings by expert),
    ``knockout`` (knock out one expert at a time), ``shared_knockout`` (switch the shared experts
    off), ``k_curve`` (re-route with every k), ``alpha`` (the MI-loss weight: CESAA family only),
    ``load_balance`` (load CV, the one-expert-carries-the-load alarm: not for models whose experts
    are tied to one domain, since their load follows the domain sizes, not the gate).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    name = caps["name"]
    if not caps["has_gate"] and measure != "alpha":
        return f"model {name!r} has no gate: there is no routing to measure or change"
    if measure in ("knockout", "k_curve") and caps["row_experts"] < 2:
        return f"model {name!r} has one expert under each row's gate: there is no other to route to"
    if measure == "shared_knockout" and caps["num_shared"] == 0:
        return f"model {name!r} has no shared expert to switch off"
    if measure == "alpha" and not caps["has_topk"]:
        return f"alpha only acts on the CESAA family (the MI loss); {name!r} ignores it"
    if measure == "load_balance" and any(k.startswith("domain:") for k in caps["expert_kinds"]):
        return (
            f"model {name!r} has domain-specific experts, whose load follows the domain sizes: "
            "load balance across all experts does not measure its gates"
        )
    return None
