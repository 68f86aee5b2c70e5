"""Health alarms summarized by kind, so that a dashboard stays readable at D = 40-50 domains.

``health_alarms`` fires one alarm per domain (``domain_auc_chance``, ``constant_predictions``) or
per pair of domains (``domains_indistinguishable``).  With many domains that is dozens of boxes;
``summarize_alarms`` folds the alarms of one kind and level into one entry
("AUC no better than chance in 17 of 40 domains: d3, d7, d9, d12, d20 and 12 more") that keeps
the domains it concerns and the original alarms as its detail.  Alarms that name no domain (gate
collapse, unused expert, MI near zero) stay one entry each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.alarms import Alarm

# what an alarm of each per-domain kind says, in a headline over many domains
_PHRASES = {
    "domain_auc_chance": "AUC no better than chance",
    "constant_predictions": "constant predictions",
}


@dataclass(frozen=True)
class AlarmGroup:
    """One summary entry: ``level`` and ``code`` of its alarms, a ``title`` (the headline), the
    ``domains`` it concerns (in the order of the model's domains), the original ``alarms`` and
    ``grouped`` (True when it folds per-domain alarms; False for a single alarm left as is)."""

    level: str
    code: str
    title: str
    domains: tuple[str, ...]
    alarms: tuple[Alarm, ...]
    grouped: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "title": self.title,
            "domains": list(self.domains),
            "alarms": [a.to_dict() for a in self.alarms],
            "grouped": self.grouped,
        }


def listed_names(names: Sequence[str], max_listed: int) -> str:
    """The first ``max_listed`` names joined by commas, then "and N more" for the rest."""
    shown = ", ".join(names[:max_listed])
    rest = len(names) - max_listed
    return f"{shown} and {rest} more" if rest > 0 else shown


def _as_alarm(a: Alarm | Mapping[str, Any]) -> Alarm:
    if isinstance(a, Alarm):
        return a
    if isinstance(a, Mapping):
        try:
            return Alarm(**a)
        except TypeError as exc:
            raise ValueError(f"alarm {dict(a)!r} is not an Alarm's fields: {exc}") from None
    raise ValueError(f"alarms must be Alarm objects or their dicts, got {type(a).__name__}")


def summarize_alarms(
    alarms: Sequence[Alarm | Mapping[str, Any]],
    domain_names: Sequence[str],
    *,
    max_listed: int = 5,
    group_above: int = 8,
) -> list[AlarmGroup]:
    """Alarms of the same code and level that name a domain folded into one ``AlarmGroup``.

    ``alarms``: as ``health_alarms`` returns them (or their ``to_dict()``).  ``domain_names``:
    the model's domains, which fix the order in which domains are listed.  With at most
    ``group_above`` domains nothing is folded: one entry per alarm, in the input order.
    Otherwise the groups keep the order in which their first alarm came (critical first), each
    headline lists at most ``max_listed`` domains and counts the rest ("and 12 more").
    """
    if isinstance(domain_names, str) or not isinstance(domain_names, Sequence):
        raise ValueError(f"domain_names must be a list of names, got {domain_names!r}")
    if isinstance(max_listed, bool) or not isinstance(max_listed, int) or max_listed < 1:
        raise ValueError(f"max_listed must be an integer >= 1, got {max_listed!r}")
    if isinstance(group_above, bool) or not isinstance(group_above, int) or group_above < 0:
        raise ValueError(f"group_above must be an integer >= 0, got {group_above!r}")
    names = [str(n) for n in domain_names]
    found = [_as_alarm(a) for a in alarms]
    position = {n: i for i, n in enumerate(names)}
    for a in found:
        for d in (a.domain, a.other_domain):
            if d is not None and d not in position:
                raise ValueError(f"alarm {a.code!r} names domain {d!r}, not among {names}")

    def single(a: Alarm) -> AlarmGroup:
        concerned = tuple(d for d in (a.domain, a.other_domain) if d is not None)
        return AlarmGroup(a.level, a.code, a.title, concerned, (a,), grouped=False)

    if len(names) <= group_above:
        return [single(a) for a in found]

    order: list[tuple[str, str] | int] = []  # group keys and positions of single alarms
    members: dict[tuple[str, str], list[Alarm]] = {}
    for i, a in enumerate(found):
        if a.domain is None:
            order.append(i)
            continue
        key = (a.level, a.code)
        if key not in members:
            members[key] = []
            order.append(key)
        members[key].append(a)

    out = []
    for item in order:
        if isinstance(item, int):
            out.append(single(found[item]))
            continue
        group = members[item]
        concerned = {d for a in group for d in (a.domain, a.other_domain) if d is not None}
        domains = tuple(sorted(concerned, key=position.__getitem__))
        listed = listed_names(domains, max_listed)
        level, code = item
        if code == "domains_indistinguishable":
            pairs = "pair" if len(group) == 1 else "pairs"
            title = (
                f"{len(group)} {pairs} of domains routed alike, involving {len(domains)} of "
                f"{len(names)} domains: {listed}"
            )
        else:
            phrase = _PHRASES.get(code, code.replace("_", " "))
            title = f"{phrase} in {len(domains)} of {len(names)} domains: {listed}"
        out.append(AlarmGroup(level, code, title, domains, tuple(group), grouped=True))
    return out


ALARM_TABLE_COLUMNS = ["level", "code", "domain", "other domain", "expert", "value", "threshold"]


def alarm_table(alarms: Sequence[Alarm | Mapping[str, Any]]) -> pd.DataFrame:
    """The raw alarm values, one row per alarm, columns ``ALARM_TABLE_COLUMNS``: an alarm about a
    pair of domains (``domains_indistinguishable``) shows both, ``domain`` and ``other domain``."""
    rows = [_as_alarm(a).to_dict() for a in alarms]
    df = pd.DataFrame(rows, columns=list(Alarm.__dataclass_fields__))
    return df.rename(columns={"other_domain": "other domain"})[ALARM_TABLE_COLUMNS]
