"""Cached pruning and merging plans of an opened checkpoint: every criterion and budget with its
predicted and measured cost, and one plan's measured cost per domain.

Like ``derived``: each is ``st.cache_data`` keyed by the path and its ``loaders.token``; every
number comes from ``analysis.prune_plans`` / ``analysis.prune_cost``; a problem the user can fix
is a ``LoadError``.
"""

from __future__ import annotations

import streamlit as st
from loaders import SPLIT, LoadError, capabilities, checkpoint, data, domain_names, token


@st.cache_data(show_spinner="Planning and measuring every budget…", max_entries=16)
def _prune(path: str, tok: str) -> dict:
    from analysis.expert_pass import expert_arrays
    from analysis.prune_plans import curve_budgets, planning_sample, prediction_error, prune_curve

    d, model, names = data(path), checkpoint(path).model, domain_names(path)
    try:
        plan_rows = planning_sample(d.val, PLAN_ROWS)
        arrays = expert_arrays(model, plan_rows, names)
        keeps = curve_budgets(capabilities(path)["num_experts"])
        curve = prune_curve(model, plan_rows, getattr(d, SPLIT), names, arrays=arrays, keeps=keeps)
    except ValueError as e:
        raise LoadError(str(e)) from None
    per, per_domain = arrays.evidence()
    return {
        "curve": curve,
        "error": prediction_error(curve),
        "evidence": per,
        "evidence_domains": per_domain,
    }


PLAN_ROWS = 4000  # validation rows the plans are chosen on (a seeded sample; the greedy is E^2)


def prune(path: str) -> dict:
    """Plans, predicted and measured cost for every criterion and budget (``curve_budgets``:
    every one up to 16 experts; chosen on at most ``PLAN_ROWS`` validation rows, measured on
    ``SPLIT``) and the per-expert evidence
    (``analysis.prune_plans``, ``analysis.expert_pass``)."""
    return _prune(path, token(path))


@st.cache_data(show_spinner="Measuring the plan per domain…", max_entries=64)
def _plan_cost(path: str, tok: str, plan: str):
    import json

    from analysis.prune_cost import plan_cost
    from cesaa.pruning import ExpertPlan

    model, names = checkpoint(path).model, domain_names(path)
    try:
        p = ExpertPlan.from_dict(json.loads(plan))
        return plan_cost(model, p, getattr(data(path), SPLIT), names)
    except ValueError as e:
        raise LoadError(str(e)) from None


def plan_cost(path: str, plan: dict):
    """The measured cost of ``plan`` (its JSON dict) overall and per domain, with intervals."""
    import json

    return _plan_cost(path, token(path), json.dumps(plan, sort_keys=True))
