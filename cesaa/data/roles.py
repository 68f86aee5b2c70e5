"""Propose a role for every column of a new table, the way a person reading it would: from its
name *and* its values.

``propose_roles(df)`` returns one ``RoleProposal(column, role, reason)`` per column, in column
order; the Train page shows them with their reasons and lets the user change each.  A name is read
as its words (``gender_of_viewer`` -> gender, of, viewer; ``movieId`` -> movie, id).  Rules, in
order:

1. **label**: a column holding only 0/1 (or booleans) whose name looks like a label (``label``,
   ``click``, ``y``, ``target``, ...); else the only 0/1 column when there is exactly one.
2. **user** / **item**: a column whose name is a user word (``user``, ``viewer``, ``customer``,
   ...) or an item word (``item``, ``movie``, ``product``, ...), alone or followed by an id word
   (``viewer_id``, ``movieId``).  They also serve as categorical features.
3. **time**: a column whose name ends in a time word (``ts``, ``time``, ``timestamp``, ``date``;
   ``rating_ts``, ``created_at``) and whose values can be times; else one whose values are times
   whatever its name: a datetime column, integers in the range of Unix seconds (1990..2100) or
   milliseconds with at least ``MIN_TIME_VALUES`` distinct values, or text that parses as dates.
4. **domain**: the text column named like a domain (``domain``, ``tab``, ``scenario``, ...) with
   2..``MAX_DOMAINS`` values; else the best of :func:`domain_candidates`: a column whose every
   value has at least ``MIN_DOMAIN_ROWS`` rows, with the most and most evenly filled values (the
   largest *effective* number of values, ``exp`` of the entropy of their shares).
5. the rest: **categorical** for integer ids (an id-like name and every value repeated, on
   average, at least ``MIN_ROWS_PER_ID`` times); **numeric** for floating-point columns and other
   integer columns with more than ``MAX_CATEGORICAL_INTS`` distinct values; **categorical** for
   text and other integers; **ignore** for a column with one value or a text column whose values
   are (almost) all distinct (free text, row ids).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

ROLES = ("label", "domain", "user", "item", "time", "categorical", "numeric", "ignore")
MAX_DOMAINS = 64
MAX_CATEGORICAL_INTS = 50
MIN_DOMAIN_ROWS = 30  # a domain with fewer rows cannot be evaluated on its own
MIN_ROWS_PER_ID = 2.0  # an id column repeats its values (a row id does not)
MIN_TIME_VALUES = 10
# Unix seconds from 1990-01-01 to 2100-01-01 (MovieLens-100k's ratings are from 1997-98)
UNIX_SECONDS = (631_152_000, 4_102_444_800)
_LABEL = re.compile(r"^(label|labels|click|clicked|clicks|is_click|y|target|conversion|converted|"
                    r"purchase|purchased|buy|like|liked|positive|outcome)$", re.I)  # fmt: skip
_USER_WORDS = {
    "user", "users", "uid", "customer", "member", "viewer", "visitor", "reader", "listener",
    "watcher", "buyer", "client", "account", "person", "subscriber", "player", "rater",
}  # fmt: skip
_ITEM_WORDS = {
    "item", "items", "iid", "movie", "film", "product", "video", "ad", "sku", "article", "song",
    "track", "book", "post", "news", "listing", "restaurant", "game", "offer",
}  # fmt: skip
_ID_WORDS = {"id", "ids", "key", "idx", "index", "code", "no", "num", "number", "hash"}
_TIME_WORDS = {"ts", "time", "timestamp", "date", "datetime", "day", "at"}
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


@dataclass(frozen=True)
class DomainCandidate:
    """A column that could split the table into domains, with its value counts.

    ``effective``: ``exp(-sum p log p)`` over the values' shares of rows, the number of equally
    filled values with the same spread (``len(counts)`` when balanced, near 1 when one value holds
    almost every row).  ``usable``: every value has at least ``MIN_DOMAIN_ROWS`` rows."""

    column: str
    counts: dict[str, int]  # value -> rows, largest first
    effective: float

    @property
    def smallest(self) -> int:
        return min(self.counts.values())

    @property
    def usable(self) -> bool:
        return self.smallest >= MIN_DOMAIN_ROWS

    def summary(self) -> str:
        """``21 values, as spread as 14.2 equal ones; largest student (21 %), smallest ...``."""
        n = sum(self.counts.values())
        (big, nb), (small, ns) = next(iter(self.counts.items())), list(self.counts.items())[-1]
        return (
            f"{len(self.counts)} values, as spread as {self.effective:.1f} equal ones; largest "
            f"{big} ({nb / n:.0%}), smallest {small} ({ns} rows, {ns / n:.1%})"
        )


def words(name: str) -> list[str]:
    """The words of a column name: ``gender_of_viewer`` -> gender, of, viewer; ``movieId`` ->
    movie, id."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def _named(name: str, vocabulary: set[str]) -> bool:
    """A word of ``vocabulary`` alone or followed by id words (``viewer``, ``viewer_id``,
    ``userid``)."""
    w = words(name)
    if not w:
        return False
    if len(w) == 1 and w[0].endswith("id") and w[0][:-2] in vocabulary:
        return True
    return w[0] in vocabulary and all(x in _ID_WORDS for x in w[1:])


def _id_like(name: str) -> bool:
    w = words(name)
    return bool(w) and (
        w[-1] in _ID_WORDS or w[-1].endswith("id") or _named(name, _USER_WORDS | _ITEM_WORDS)
    )


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


def _time_named(name: str) -> bool:
    w = words(name)
    return bool(w) and w[-1] in _TIME_WORDS


def _time_values(s: pd.Series, k: int, named: bool) -> str | None:
    """Why the values of ``s`` are times (``None`` when they are not); with a time-like name
    (``named``) any numbers will do (they order the rows)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime values"
    if pd.api.types.is_numeric_dtype(s) and not _is_binary(s):
        if k < MIN_TIME_VALUES:
            return "ordered numbers" if named else None
        lo, hi = float(s.min()), float(s.max())
        for scale, unit in ((1, "seconds"), (1000, "milliseconds")):
            if UNIX_SECONDS[0] * scale <= lo and hi <= UNIX_SECONDS[1] * scale:
                first = pd.Timestamp(lo / scale, unit="s").date()
                last = pd.Timestamp(hi / scale, unit="s").date()
                return f"Unix {unit} from {first} to {last}"
        return "ordered numbers" if named else None
    if _is_text(s):
        sample = s.dropna().astype(str).head(50)
        if sample.empty or not sample.str.contains(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}").all():
            return None
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
        if parsed.notna().all():
            return f"dates from {parsed.min().date()} to {parsed.max().date()}"
    return None


def domain_candidates(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[DomainCandidate]:
    """The text columns with 2..``MAX_DOMAINS`` values, best domain first: the usable ones (every
    value with ``MIN_DOMAIN_ROWS`` rows) by effective number of values, then the rest by the rows
    of their smallest value."""
    out = []
    for c in df.columns:
        s = df[c]
        if str(c) in exclude or not _is_text(s):
            continue
        vc = s.astype(str).where(s.notna()).value_counts(dropna=True)
        if not 2 <= len(vc) <= MAX_DOMAINS:
            continue
        p = vc.to_numpy(dtype=np.float64) / vc.sum()
        effective = float(math.exp(-(p * np.log(p)).sum()))
        counts = {str(v): int(n) for v, n in vc.items()}
        out.append(DomainCandidate(str(c), counts, effective))
    return sorted(out, key=lambda d: (not d.usable, -d.effective if d.usable else -d.smallest))


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

    for role, vocabulary, what in (
        ("user", _USER_WORDS, "a user"),
        ("item", _ITEM_WORDS, "an item"),
    ):
        for c in cols:
            if c not in roles and _named(c, vocabulary):
                reason = f"named like {what} ({nunique[c]} distinct ids); also a categorical id"
                roles[c] = RoleProposal(c, role, reason)
                break

    times = {c: _time_values(series[c], nunique[c], _time_named(c)) for c in cols if c not in roles}
    by_name = [c for c, why in times.items() if why and _time_named(c)]
    by_value = [c for c, why in times.items() if why and not _id_like(c)]  # hashed ids are no times
    if by_name or by_value:
        c = (by_name or by_value)[0]
        how = "named like a timestamp, " if by_name else ""
        roles[c] = RoleProposal(c, "time", f"{how}{times[c]} (for a split by time)")

    named_domain = [
        c
        for c in cols
        if c not in roles and _is_text(series[c]) and 2 <= nunique[c] <= MAX_DOMAINS
        and _DOMAIN.match(c)
    ]  # fmt: skip
    if named_domain:
        pick = named_domain[0]
        reason = f"text with {nunique[pick]} values and a domain-like name"
        roles[pick] = RoleProposal(pick, "domain", reason)
    else:
        candidates = domain_candidates(df, exclude=tuple(roles))
        if candidates:
            best = candidates[0]
            why = (
                "the most, most evenly filled values"
                if best.usable
                else f"no column has {MIN_DOMAIN_ROWS}+ rows in every value; the largest smallest"
            )
            roles[best.column] = RoleProposal(best.column, "domain", f"{why}: {best.summary()}")

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
            per_value = s.notna().sum() / k
            if _id_like(c) and per_value >= MIN_ROWS_PER_ID:
                why = f"integer ids: an id-like name, {k} values with {per_value:.1f} rows each"
                roles[c] = RoleProposal(c, "categorical", why)
            elif k > MAX_CATEGORICAL_INTS:
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
