"""Configuration dataclasses.  ``dataclasses.asdict(cfg)`` is what goes into ``meta.json``.

Every reconstructed choice of the CESAA paper (see ``docs/model.md``) is a field here, with its default and
the reason for it.  ``apply_overrides`` implements the CLI's ``--set model.top_k=2`` and rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

GATE_INPUTS = ("concat", "per_domain", "features")
FUSIONS = ("sum", "concat")
HEADS = ("shared", "per_domain")
DISPATCHES = ("sparse", "dense")
MONITORS = ("auc", "mean_domain_auc", "worst_domain_auc", "gauc", "logloss")
TASKS = ("ranking", "retrieval")
MI_SCOPES = ("rank", "global")
AMP_MODES = ("off", "bf16")
ADASPARSE_FORMS = ("binarization", "scaling", "fusion")
TOWER_INITS = ("tied", "independent")
INPUT_NORMS = ("none", "batch")


@dataclass
class ModelConfig:
    """Architecture of every model in the registry (each model reads the fields it needs)."""

    name: str = "cesaa"
    embed_dim: int = 16  # Scenario-Wise Rec benchmark setting
    expert_hidden: tuple[int, ...] = (64,)  # hidden layers of each expert MLP
    expert_dim: int = 32  # output width H of every expert
    tower_hidden: tuple[int, ...] = (32,)  # hidden layers of the prediction tower(s)
    dropout: float = 0.0
    # --- CES: conditional expert selection ---
    num_experts: int = 8  # E selectable domain experts
    top_k: int = 2  # k experts per example (Shazeer et al. use k=2..4)
    num_shared: int = 1  # always-on shared experts; 0 = the "no shared expert" ablation
    # gate slot e runs expert expert_slots[e]; () = one expert per slot.  Written by `cesaa prune`
    # when it merges experts: the merged slots keep their gate columns and share one averaged expert
    expert_slots: tuple[int, ...] = ()
    gate_input: str = "concat"  # concat: gate sees [x, domain emb]; per_domain: one W_g per domain; features: x only
    noisy_gating: bool = True  # Shazeer's trainable noise, training only
    dispatch: str = "sparse"  # sparse: run only selected experts; dense: run all and mask (oracle)
    fusion: str = (
        "sum"  # sum: h = mean(shared) + sum_k g_k E_k; concat: [mean(shared), sum_k g_k E_k]
    )
    head: str = "shared"  # shared: one tower on [h, domain emb]; per_domain: one tower per domain
    # --- AEA: adaptive expert aggregation ---
    alpha: float = 0.01  # weight of L_MI = -I(D;E) (Mod-Squad used 5e-4..3e-2)
    beta: float = 0.0  # weight of Shazeer's balance loss CV(importance)^2 + CV(load)^2
    # --- baselines ---
    mmoe_experts: int = 0  # 0 = one expert per domain (Scenario-Wise Rec setting)
    ple_levels: int = 1  # stacked CGC levels
    ple_specific: int = 2  # domain-specific experts per domain
    ple_shared: int = 1  # shared experts per level
    # PLE's domain gates start with this total weight on the shared experts (the only experts every
    # domain trains); 0 = nn.Linear's init, about Sh / (S + Sh), which left PLE on the plateau of
    # product-structured data for longer (docs/training.md)
    ple_shared_weight: float = 0.8
    # per-domain towers (Shared-Bottom, MMoE, PLE, HMoE, CESAA with head="per_domain", and the
    # retrieval user towers of MMoE and CESAA): tied = every domain's tower starts as one draw
    # (STAR's shared start; its weights then train apart); independent = one draw per domain,
    # which left these models on the plateau of product-structured data (docs/training.md)
    tower_init: str = "tied"
    # HMoE's label-space gate starts with this weight on the row's own domain (the only tower the
    # row trains); 0 = nn.Linear's init, about 1/D, which kept HMoE on the plateau (docs/training.md)
    hmoe_self_weight: float = 0.9
    # every model's input (embeddings + numeric columns): none = as is (the papers'); batch = a
    # BatchNorm1d over it (cesaa.features.FeatureEmbedding).  The embeddings start at std
    # embed_init_std next to standard-normal numeric columns: on product-structured data batch
    # ends MMoE's plateau, on MovieLens-100k it overfits at once (docs/training.md)
    input_norm: str = "none"
    embed_init_std: float = 0.05  # std of every embedding's N(0, std^2) init
    star_hidden: tuple[int, ...] = (64, 32)  # star-topology FCN widths
    # AdaSparse (Yang et al. 2022): pi = s * 1[s >= eps], s from the form below (paper's defaults)
    adasparse_form: str = "fusion"  # binarization: sig(a v); scaling: b sig(v); fusion: b sig(a v)
    adasparse_epsilon: float = 0.01  # factors below epsilon are set to exactly 0 (pruned)
    adasparse_beta: float = 2.0  # scale b >= 1: lets a factor amplify a neuron as well as damp it
    adasparse_alpha: float = 1.0  # initial sigmoid slope a, annealed upwards during training
    adasparse_alpha_step: float = 1e-4  # a grows this much per training step (Scenario-Wise Rec)
    adasparse_sparsity: float = 0.0  # weight of the flexible sparsity regularizer; 0 = off
    adasparse_r_min: float = 0.1  # target band of each layer's pruned fraction, for the regularizer
    adasparse_r_max: float = 0.3
    # PEPNet (Chang et al. 2023)
    pepnet_gamma: float = 2.0  # Gate NU = gamma * sigmoid(...): gates in (0, gamma), 1 at neutral
    pepnet_prior: str = "auto"  # PPNet prior columns (comma-separated); auto: user_id, item_id
    # False: no PPNet gates (EPNet and a plain DNN), the ablation of docs/model.md's measurement
    pepnet_ppnet: bool = True
    # M2M (Zhang et al. 2022): experts = mmoe_experts (0 = one per domain), width expert_dim
    m2m_tower_layers: int = 2  # residual meta-tower layers, weights generated from the domain

    def __post_init__(self) -> None:
        self.expert_hidden = tuple(int(h) for h in self.expert_hidden)
        self.tower_hidden = tuple(int(h) for h in self.tower_hidden)
        self.expert_slots = tuple(int(s) for s in self.expert_slots)
        self.star_hidden = tuple(int(h) for h in self.star_hidden)
        _positive(self, "embed_dim", "expert_dim", "num_experts", "ple_levels", "ple_specific")
        _nonnegative(self, "num_shared", "mmoe_experts", "ple_shared")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, num_experts={self.num_experts}]")
        if self.expert_slots:
            _check_slots(self.expert_slots, self.num_experts)
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} must be >= 0 (it weights -I(D;E))")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        _choice(self, "gate_input", GATE_INPUTS)
        _choice(self, "fusion", FUSIONS)
        _choice(self, "head", HEADS)
        _choice(self, "dispatch", DISPATCHES)
        _choice(self, "adasparse_form", ADASPARSE_FORMS)
        _choice(self, "tower_init", TOWER_INITS)
        _choice(self, "input_norm", INPUT_NORMS)
        if self.embed_init_std <= 0:
            raise ValueError(f"embed_init_std={self.embed_init_std} must be > 0")
        if not 0 <= self.ple_shared_weight < 1:
            raise ValueError(f"ple_shared_weight={self.ple_shared_weight} must be in [0, 1)")
        if not 0 <= self.hmoe_self_weight < 1:
            raise ValueError(f"hmoe_self_weight={self.hmoe_self_weight} must be in [0, 1)")
        if not 0 <= self.adasparse_epsilon < 1:
            raise ValueError(f"adasparse_epsilon={self.adasparse_epsilon} must be in [0, 1)")
        if self.adasparse_beta < 1:
            raise ValueError(f"adasparse_beta={self.adasparse_beta} must be >= 1")
        if self.adasparse_alpha <= 0 or self.adasparse_alpha_step < 0:
            raise ValueError(
                f"adasparse_alpha={self.adasparse_alpha} must be > 0 and "
                f"adasparse_alpha_step={self.adasparse_alpha_step} >= 0"
            )
        if self.adasparse_sparsity < 0:
            raise ValueError(f"adasparse_sparsity={self.adasparse_sparsity} must be >= 0")
        if not 0 <= self.adasparse_r_min <= self.adasparse_r_max <= 1:
            raise ValueError(
                f"adasparse_r_min={self.adasparse_r_min}, adasparse_r_max={self.adasparse_r_max}: "
                "need 0 <= r_min <= r_max <= 1"
            )
        _positive(self, "m2m_tower_layers")
        if self.pepnet_gamma <= 0:
            raise ValueError(f"pepnet_gamma={self.pepnet_gamma} must be > 0")


@dataclass
class TrainConfig:
    """Optimization and early stopping.  Defaults: the paper's Adam, lr 1e-3, batch 1024, and the
    benchmark protocol of docs/benchmarks.md (weight decay 1e-5, at most 30 epochs, patience 4)."""

    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 4  # epochs without improvement of `monitor` before stopping
    # no early stop before this many optimizer steps (plateaus last steps, not epochs; see
    # cesaa/stopping.py and docs/training.md, where the default was chosen on validation)
    min_steps: int = 1000
    # no early stop in an epoch whose training-batch I(D;E) rose by more than this fraction over the
    # epoch before: the routing is still forming (cesaa/stopping.py); 0 = do not wait for it
    routing_rise: float = 0.1
    monitor: str = "auc"  # validation metric for early stopping
    seed: int = 0
    device: str = "auto"  # auto: CUDA when present, else CPU
    eval_batch_size: int = 8192
    routing_snapshots: bool = False  # save per-epoch routing statistics for the analysis package
    max_grad_norm: float = 0.0  # 0 = no clipping
    # under torchrun (DDP): rank = L_MI from each process's own batch (cheap, the default);
    # global = from the joint P(D, E) all-reduced over processes (equals one process, same batch)
    mi_scope: str = "rank"
    # bf16: the training forward pass under torch.autocast(bfloat16) (matrix products in bf16 on
    # GPUs and on CPUs with bf16 units); weights, optimizer state, the losses and every evaluation
    # stay float32.  off: float32 throughout (the default; CPU results are the reference)
    amp: str = "off"

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "eval_batch_size")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        _nonnegative(self, "weight_decay", "patience", "max_grad_norm", "min_steps", "routing_rise")
        _choice(self, "monitor", MONITORS)
        _choice(self, "mi_scope", MI_SCOPES)
        _choice(self, "amp", AMP_MODES)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device={self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _check_slots(slots: tuple[int, ...], num_experts: int) -> None:
    """One expert index per gate slot, the experts numbered 0..P-1 with none left unused."""
    if len(slots) != num_experts:
        raise ValueError(
            f"expert_slots={list(slots)} must name one expert per gate slot "
            f"(num_experts={num_experts})"
        )
    used = sorted(set(slots))
    if used != list(range(len(used))):
        raise ValueError(
            f"expert_slots={list(slots)} must use every expert 0..{len(used) - 1} "
            "(no gaps, no negative index)"
        )


def _positive(obj: Any, *names: str) -> None:
    for n in names:
        if getattr(obj, n) < 1:
            raise ValueError(f"{n}={getattr(obj, n)} must be >= 1")


def _nonnegative(obj: Any, *names: str) -> None:
    for n in names:
        if getattr(obj, n) < 0:
            raise ValueError(f"{n}={getattr(obj, n)} must be >= 0")


def _choice(obj: Any, name: str, options: tuple[str, ...]) -> None:
    if getattr(obj, name) not in options:
        raise ValueError(f"{name}={getattr(obj, name)!r} must be one of {list(options)}")


def _parse_value(raw: str, current: Any, key: str) -> Any:
    """Parse a CLI string into the type of the field's current value."""
    try:
        if isinstance(current, bool):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            raw = raw.strip().strip("()[]")
            return tuple(int(v) for v in raw.split(",") if v.strip())
        return raw
    except ValueError:
        kind = type(current).__name__
        raise ValueError(f"--set {key}={raw!r}: expected a value of type {kind}") from None


def apply_overrides(
    model: ModelConfig, train: TrainConfig, sets: list[str]
) -> tuple[ModelConfig, TrainConfig]:
    """Apply ``section.field=value`` strings; unknown keys raise ``ValueError`` listing the valid ones."""
    changes: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    cfgs = {"model": model, "train": train}
    valid = [f"model.{f.name}" for f in fields(ModelConfig) if f.name != "name"] + [
        f"train.{f.name}" for f in fields(TrainConfig)
    ]
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. model.top_k=2")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise ValueError(f"unknown --set key {key!r}; valid keys: {', '.join(valid)}")
        section, name = key.split(".", 1)
        changes[section][name] = _parse_value(raw, getattr(cfgs[section], name), key)
    return (
        dataclasses.replace(model, **changes["model"]),
        dataclasses.replace(train, **changes["train"]),
    )


def config_from_dict(cls: type, d: dict) -> Any:
    """Rebuild a config dataclass from ``asdict`` output strictly: unknown keys are an error."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**kwargs)


__all__ = ["ModelConfig", "TrainConfig", "apply_overrides", "config_from_dict", "field"]
