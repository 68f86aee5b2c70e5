"""Overview at many domains: per-domain alarms of one kind fold into one line (issue 12), the
per-domain detail sits in an expander, and the raw alarm table is unchanged."""

from __future__ import annotations

import pytest
from apptest_support import _app_on_path, run_page  # noqa: F401  (fixtures)

from cesaa.config import TrainConfig
from cesaa.data import load_data
from cesaa.models.registry import default_config
from cesaa.train import train

D = 12  # past the 8 domains at which the Overview starts folding


@pytest.fixture(scope="module")
def many_domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    data = load_data(f"synthetic:rows=4000,domains={D},seed=0")
    train(default_config("cesaa"), TrainConfig(epochs=1, batch_size=256), data, root / "d12")
    return root


@pytest.fixture(autouse=True)
def _env(monkeypatch, many_domains, tmp_path):
    monkeypatch.setenv("CESAA_CHECKPOINTS", str(many_domains))
    monkeypatch.setenv("CESAA_DASHBOARD_RUNS", str(tmp_path / "runs"))


def listing(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def test_overview_folds_per_domain_alarms(many_domains):
    at = run_page("overview", many_domains / "d12")
    assert not at.exception, [e.value for e in at.exception]
    raw = at.dataframe[-2].value  # the alarm values table: one row per alarm, as before
    assert set(raw.columns) >= {"level", "code", "domain"}
    per_domain = raw[raw["domain"].notna()]
    assert not per_domain.empty  # 1 epoch on 12 domains: routing alike and/or chance AUC
    order = [f"domain_{i}" for i in range(D)]
    expanders = {e.label: e for e in at.expander}
    for code, rows in per_domain.groupby("code", sort=False):
        detail = expanders[f"Per-domain detail: {code} ({len(rows)} alarms)"]
        boxes = detail.error if rows["level"].iloc[0] == "critical" else detail.warning
        assert len(boxes) == len(rows)  # each domain's own alarm, inside the expander
        if code == "domains_indistinguishable":
            # both domains of each pair; the table names the first, the titles the second
            titles = [b.value for b in boxes]
            named = {d for d in order if any(f"**{d} and" in t or f" {d} are" in t for t in titles)}
            doms = [d for d in order if d in named]
            head = (
                f"{len(rows)} pair{'s' if len(rows) > 1 else ''} of domains routed alike, "
                f"involving {len(doms)} of {D} domains: {listing(doms)}"
            )
        else:
            doms = [d for d in order if d in set(rows["domain"])]
            phrase = {
                "domain_auc_chance": "AUC no better than chance",
                "constant_predictions": "constant predictions",
            }[code]
            head = f"{phrase} in {len(doms)} of {D} domains: {listing(doms)}"
        shown = [b.value for b in (at.error if rows["level"].iloc[0] == "critical" else at.warning)]
        assert f"**{head}**" in shown
