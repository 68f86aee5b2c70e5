"""The alarm record and its thresholds (``analysis.alarms`` builds the alarms)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LEVELS = ("critical", "warning", "unchecked")


@dataclass(frozen=True)
class AlarmThresholds:
    """When each alarm fires.  Defaults and why:

    - ``collapse_share`` = 0.9: an expert selected by more than 90% of the rows of the average
      domain serves every domain alike: cross-domain collapse.  With D domains each sent to its
      own expert, the largest value is 1/D (0.5 for two domains), far below.
    - ``dead_fraction`` = 0.01: an expert with < 1% of its uniform share 1/E of the selections does
      essentially no work (the same default as ``load_balance``).
    - ``chance_auc_margin`` = 0.02: AUC in [0.48, 0.52] is within the noise of a random ranking
      for a few thousand rows (the AUC's standard error is about 0.01 at 2,500 rows).
    - ``constant_pred_std`` = 1e-3: predicted probabilities that vary by less than 0.1 percentage
      point cannot rank rows.
    - ``min_mi`` = 0.05: normalized I(D; E) (in [0, 1], see ``mutual_information``) below 5% of
      its maximum means the routing barely depends on the domain.
    - ``similar_domains_js`` = 0.005 nats: Jensen-Shannon divergence below 0.7% of its maximum
      log 2, i.e. the two domains' expert mixes differ by about a percent.
    """

    collapse_share: float = 0.9
    dead_fraction: float = 0.01
    chance_auc_margin: float = 0.02
    constant_pred_std: float = 1e-3
    min_mi: float = 0.05
    similar_domains_js: float = 0.005

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"AlarmThresholds.{name} must be a number >= 0, got {value!r}")
        if not 0 < self.collapse_share <= 1:
            raise ValueError(f"collapse_share={self.collapse_share} must be in (0, 1]")


@dataclass(frozen=True)
class Alarm:
    """One finding: ``level`` ("critical", "warning", or "unchecked": a check that could not be
    decided, with the reason in ``message``), a stable ``code``, a short ``title``, a
    ``message`` in plain language (what it means, what to try), the ``domain`` name and ``expert``
    index it concerns (or None), the measured ``value`` and the ``threshold`` it crossed.  Alarms
    about a pair of domains name the second one in ``other_domain``."""

    level: str
    code: str
    title: str
    message: str
    domain: str | None = None
    expert: int | None = None
    value: float | None = None
    threshold: float | None = None
    other_domain: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
