"""Propose a role for every column of a new table, the way a person reading it would.

``propose_roles(df)`` returns one ``RoleProposal(column, role, reason)`` per column, in column
order; the Train page shows them with their reasons and lets the user change each.  Rules, in
order:

1. **label**: a column holding only 0/1 (or booleans) whose name looks like a label (``label``,
   ``click``, ``y``, ``target``, ...); else the only 0/1 column when there is exactly one.
2. **user** / **item**: a column named like a user id (``user``, ``uid``, ``user_id``, ...) or an
   item id (``item``, ``movie_id``, ``product``, ...).  They also serve as categorical features.
3. **time**: a column named like a timestamp (``ts``, ``time``, ``timestamp``, ``date``).
4. **domain**: the text column named like a domain (``domain``, ``tab``, ``scenario``,
   ``channel``, ...) with 2..``MAX_DOMAINS`` values; else the text column with the fewest distinct
   values in that range.
5. the rest: **numeric** for floating-point columns and integer columns with more than
   ``MAX_CATEGORICAL_INTS`` distinct values; **categorical** for text and other integers;
   **ignore** for a column with one value or a text column whose values are (almost) all distinct
   (free text, row ids).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

ROLES = ("label", "domain", "user", "item", "time", "categorical", "numeric", "ignore")
MAX_DOMAINS = 64
MAX_CATEGORICAL_INTS = 50
_LABEL = re.compile(r"^(label|labels|click|clicked|clicks|is_click|y|target|conversion|converted|"
                    r"purchase|purchased|buy|like|liked|positive|outcome)$", re.I)  # fmt: skip
_USER = re.compile(r"^(user|users|uid|user_?id|userid|customer|customer_?id|member_?id)$", re.I)
_ITEM = re.compile(
    r"^(item|items|iid|item_?id|itemid|movie|movie_?id|product|product_?id|video|video_?id|ad|"
    r"ad_?id|sku|article|article_?id|song|song_?id)$",
    re.I,
)
_TIME = re.compile(r"^(ts|time|timestamp|date|datetime|event_?time|created_?at)$", re.I)
_DOMAIN = re.compile(
    r"^(domain|domains|tab|scenario|scene|channel|page|surface|market|country|region|site|"
    r"platform|app|section)$",
    re.I,
)


@dataclass(frozen=True)
class RoleProposal:
    column: str
    role: str
    reason: str


def _is_binary(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    if not pd.api.types.is_numeric_dtype(s):
        return False
    values = set(pd.unique(s.dropna()))
    return bool(values) and values <= {0, 1}


def _is_text(s: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(s)
        or pd.api.types.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def propose_roles(df: pd.DataFrame) -> list[RoleProposal]:
    """One proposal per column of ``df`` (see the module doc)."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if df.shape[1] == 0:
        raise ValueError("the table has no columns")
    cols = [str(c) for c in df.columns]
    series = {str(c): df[c] for c in df.columns}
    nunique = {c: int(series[c].nunique(dropna=True)) for c in cols}
    roles: dict[str, RoleProposal] = {}

    binary = [c for c in cols if _is_binary(series[c])]
    named = [c for c in binary if _LABEL.match(c)]
    if named:
        roles[named[0]] = RoleProposal(named[0], "label", "0/1 values and a label-like name")
    elif len(binary) == 1:
        roles[binary[0]] = RoleProposal(binary[0], "label", "the only column holding only 0/1")

    for role, pattern, what in (("user", _USER, "a user id"), ("item", _ITEM, "an item id")):
        for c in cols:
            if c not in roles and pattern.match(c):
                reason = f"named like {what} ({nunique[c]} distinct); also a categorical feature"
                roles[c] = RoleProposal(c, role, reason)
                break
    for c in cols:
        if c not in roles and _TIME.match(c):
            roles[c] = RoleProposal(c, "time", "named like a timestamp (for the temporal split)")
            break

    text = [
        c for c in cols if c not in roles and _is_text(series[c]) and 2 <= nunique[c] <= MAX_DOMAINS
    ]
    pick = next((c for c in text if _DOMAIN.match(c)), None)
    if pick is not None:
        reason = f"text with {nunique[pick]} values and a domain-like name"
    elif text:
        pick = min(text, key=lambda c: (nunique[c], cols.index(c)))
        reason = f"the text column with the fewest distinct values ({nunique[pick]})"
    if pick is not None:
        roles[pick] = RoleProposal(pick, "domain", reason)

    n = len(df)
    for c in cols:
        if c in roles:
            continue
        s, k = series[c], nunique[c]
        if k <= 1:
            roles[c] = RoleProposal(c, "ignore", f"a single value ({k} distinct): says nothing")
        elif pd.api.types.is_float_dtype(s):
            roles[c] = RoleProposal(c, "numeric", f"floating-point ({k} distinct values)")
        elif pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
            if k > MAX_CATEGORICAL_INTS:
                roles[c] = RoleProposal(c, "numeric", f"integers with {k} distinct values")
            else:
                roles[c] = RoleProposal(c, "categorical", f"integers with only {k} distinct values")
        elif n >= 20 and k >= 0.95 * n:
            roles[c] = RoleProposal(
                c, "ignore", f"text with a different value on almost every row ({k} of {n})"
            )
        else:
            roles[c] = RoleProposal(c, "categorical", f"text with {k} distinct values")
    return [roles[c] for c in cols]


def schema_from_roles(roles: dict[str, str]) -> dict:
    """The table-schema dict (``cesaa.data.schema`` keys) for ``column -> role``; user and item
    columns are also categorical features.  ``ValueError`` when a label or domain is missing or
    given twice, or a role is unknown."""
    bad = {c: r for c, r in roles.items() if r not in ROLES}
    if bad:
        raise ValueError(f"unknown roles {bad}; roles are {list(ROLES)}")
    by_role: dict[str, list[str]] = {r: [c for c, x in roles.items() if x == r] for r in ROLES}
    for role in ("label", "domain"):
        if len(by_role[role]) != 1:
            found = by_role[role] or "none"
            raise ValueError(f"exactly one column must be the {role}, got {found}")
    for role in ("user", "item", "time"):
        if len(by_role[role]) > 1:
            raise ValueError(f"at most one column can be the {role}, got {by_role[role]}")
    categorical = by_role["user"] + by_role["item"] + by_role["categorical"]
    categorical = [c for c in roles if c in categorical]  # column order
    if not categorical and not by_role["numeric"]:
        raise ValueError("no feature columns: mark at least one column categorical or numeric")
    return {
        "label": by_role["label"][0],
        "domain": by_role["domain"][0],
        "categorical": categorical,
        "numeric": by_role["numeric"],
        "user": (by_role["user"] or [None])[0],
        "item": (by_role["item"] or [None])[0],
        "time": (by_role["time"] or [None])[0],
    }
