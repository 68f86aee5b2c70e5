"""Each model's hyperparameter search space, for tuning with an equal budget (``cesaa bench``).

A search space is a callable ``space(trial) -> dict``: ``trial`` is anything with Optuna's
``suggest_float(name, low, high, log=...)``, ``suggest_int(name, low, high)`` and
``suggest_categorical(name, choices)`` (this package never imports Optuna); the returned dict maps
ModelConfig or TrainConfig field names to values, e.g. ``{"lr": 1e-3, "top_k": 2}``.  It is attached
to a model with ``@register(..., search_space=space)`` and read with
``cesaa.models.registry.model_search_space(name)``.

Every space contains the shared optimization choices (learning rate, weight decay, embedding width,
dropout) plus the model's own architecture choices.  Tuple fields are suggested as strings
(``"128,64"``: Optuna's categorical choices must be scalars) and parsed here.
"""

from __future__ import annotations

from typing import Any

Params = dict[str, Any]


def _widths(trial: Any, name: str, choices: list[str]) -> tuple[int, ...]:
    raw = trial.suggest_categorical(name, choices)
    return tuple(int(v) for v in str(raw).split(",") if v)


def common(trial: Any) -> Params:
    """Learning rate (log-uniform 3e-4..1e-2), weight decay, embedding width, dropout."""
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-6, 1e-5, 1e-4]),
        "embed_dim": trial.suggest_categorical("embed_dim", [8, 16, 32]),
        "dropout": trial.suggest_categorical("dropout", [0.0, 0.1, 0.2]),
    }


def _experts(trial: Any) -> Params:
    return {
        "expert_dim": trial.suggest_categorical("expert_dim", [16, 32, 64]),
        "expert_hidden": _widths(trial, "expert_hidden", ["64", "128", "128,64"]),
        "tower_hidden": _widths(trial, "tower_hidden", ["32", "64"]),
    }


def sparse_moe(trial: Any) -> Params:
    """Noisy top-k MoE: E, k (k <= E by construction: k in {1, 2, 4}, E in {4, 8, 16})."""
    return {
        **common(trial),
        **_experts(trial),
        "num_experts": trial.suggest_categorical("num_experts", [4, 8, 16]),
        "top_k": trial.suggest_categorical("top_k", [1, 2, 4]),
        "gate_input": trial.suggest_categorical("gate_input", ["concat", "per_domain", "features"]),
    }


def cesaa(trial: Any) -> Params:
    """CESAA's reconstructed choices: gate input, head, fusion, expert sizes, E, k, shared, alpha."""
    return {
        **sparse_moe(trial),
        "num_shared": trial.suggest_categorical("num_shared", [0, 1, 2]),
        "alpha": trial.suggest_categorical("alpha", [0.0, 0.001, 0.01, 0.1]),
        "fusion": trial.suggest_categorical("fusion", ["sum", "concat"]),
        "head": trial.suggest_categorical("head", ["shared", "per_domain"]),
    }


def mmoe(trial: Any) -> Params:
    """MMoE: expert sizes and the number of experts (0 = one per domain)."""
    return {
        **common(trial),
        **_experts(trial),
        "mmoe_experts": trial.suggest_categorical("mmoe_experts", [0, 4, 8]),
    }


def ple(trial: Any) -> Params:
    """PLE: expert sizes, specific / shared experts per level, CGC levels."""
    return {
        **common(trial),
        **_experts(trial),
        "ple_specific": trial.suggest_categorical("ple_specific", [1, 2]),
        "ple_shared": trial.suggest_categorical("ple_shared", [1, 2]),
        "ple_levels": trial.suggest_categorical("ple_levels", [1, 2]),
    }


def shared_bottom(trial: Any) -> Params:
    """Shared-Bottom: the shared MLP's and the towers' widths."""
    return {**common(trial), **_experts(trial)}


def star(trial: Any) -> Params:
    """STAR: the star-topology FCN's widths and the towers'."""
    return {
        **common(trial),
        "star_hidden": _widths(trial, "star_hidden", ["64,32", "128,64", "256,128"]),
        "tower_hidden": _widths(trial, "tower_hidden", ["32", "64"]),
    }


def mlp(trial: Any) -> Params:
    """MLP with the domain as a feature: its hidden widths."""
    return {
        **common(trial),
        "expert_hidden": _widths(trial, "expert_hidden", ["64", "128,64", "256,128"]),
        "tower_hidden": _widths(trial, "tower_hidden", ["32", "64"]),
    }
