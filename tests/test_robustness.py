"""Bad inputs not covered elsewhere (see docs/robustness.md for the whole list and where each is tested).

Every bad input is a ``ValueError`` (``CheckpointError`` is one) whose message names the file, the
column or the field; the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cesaa.checkpoint import CheckpointError, load_checkpoint
from cesaa.cli import main
from cesaa.config import TrainConfig
from cesaa.data import load_data, load_table_frame
from cesaa.data.stream import open_stream
from cesaa.models.registry import default_config
from cesaa.train import train

SRC = "synthetic:rows=2000,domains=3,seed=0"


def clicks(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "city": rng.choice(["paris", "rome", "oslo"], n),
            "price": rng.normal(10, 3, n),
            "click": np.arange(n) % 2,
            "tab": np.where(np.arange(n) % 3 == 0, "search", "home"),
        }
    )


def write(
    folder: Path,
    df: pd.DataFrame,
    name: str = "clicks.parquet",
    *,
    row_group_size: int = 8,
    **schema,
) -> Path:
    """Write ``df`` and a schema naming label click, domain tab (home/search), city, price."""
    data = folder / name
    if name.endswith(".parquet"):
        df.to_parquet(data, index=False, row_group_size=row_group_size)
    else:
        df.to_csv(data, index=False)
    s = {
        "data": name,
        "label": "click",
        "domain": "tab",
        "domains": ["home", "search"],
        "categorical": ["city"],
        "numeric": ["price"],
        **schema,
    }
    path = folder / "clicks.yaml"
    path.write_text(yaml.safe_dump(s))
    return path


# ---- data: the in-memory loader --------------------------------------------------------------------


def test_wrong_dtype_numeric_column(tmp_path):
    df = clicks()
    df["price"] = ["abc"] + [str(v) for v in df["price"][1:]]
    schema = write(tmp_path, df, "clicks.csv")
    with pytest.raises(
        ValueError,
        match=r"clicks\.csv: numeric column 'price' is not numeric \(dtype (object|str), e\.g\. 'abc' at row 0\)",
    ):
        load_table_frame(schema)


# ---- data: the Parquet stream (same checks, file row numbers across row groups) ---------------------


def _bad(kind: str, folder: Path) -> Path:
    df = clicks()
    if kind == "missing column":
        return write(folder, df.drop(columns=["price"]))
    if kind == "wrong dtype":
        df["price"] = df["price"].astype(str)
        df.loc[30, "price"] = "abc"
        return write(folder, df)
    if kind == "NaN label":
        df["click"] = df["click"].astype(float)
        df.loc[27, "click"] = np.nan
        return write(folder, df)
    if kind == "non-binary label":
        df.loc[19, "click"] = 5
        return write(folder, df)
    if kind == "undeclared domain":
        df.loc[33, "tab"] = "video"
        return write(folder, df)
    if kind == "empty domain":
        return write(folder, df.assign(tab="home"))
    if kind == "empty file":
        return write(folder, df.iloc[:0])
    if kind == "truncated file":
        schema = write(folder, df)
        raw = (folder / "clicks.parquet").read_bytes()
        (folder / "clicks.parquet").write_bytes(raw[: len(raw) // 2])
        return schema
    if kind == "CSV":
        return write(folder, df, "clicks.csv")
    raise AssertionError(kind)


STREAM_ERRORS = {
    "missing column": r"clicks\.parquet: numeric column 'price' named by schema .* is missing; "
    r"available columns: \['city', 'click', 'tab'\]",
    "wrong dtype": r"clicks\.parquet: numeric column 'price' is not numeric \(dtype (object|str), e\.g\.",
    "NaN label": r"clicks\.parquet: label column 'click' has 1 NaN/missing value\(s\), first at row 27",
    "non-binary label": r"clicks\.parquet: label column 'click' must be binary .* found values \[5\], "
    r"first at row 19",
    "undeclared domain": r"clicks\.parquet: domain column 'tab' has values not in the declared domains "
    r"\['home', 'search'\]: \['video'\], first at row 33",
    "empty domain": r"clicks\.parquet: empty domain: declared domain\(s\) \['search'\] of column 'tab' "
    r"have no rows",
    "empty file": r"clicks\.parquet: empty file \(header only, no rows\)",
    "truncated file": r"clicks\.parquet: cannot read it as Parquet \(truncated or not Parquet\?\)",
    "CSV": r"clicks\.csv: streaming reads Parquet only",
}


@pytest.mark.parametrize("kind", list(STREAM_ERRORS))
def test_stream_bad_input(kind, tmp_path):
    schema = _bad(kind, tmp_path)
    with pytest.raises(ValueError, match=STREAM_ERRORS[kind]):
        open_stream(f"stream:{schema}")


def test_stream_with_a_checkpoint_of_other_domains(tmp_path):
    schema = write(tmp_path, clicks())
    enc = open_stream(f"stream:{schema}").encoders
    other = {**enc, "domain": {**enc["domain"], "names": ["home", "video"]}}
    with pytest.raises(
        ValueError, match=r"domains \['home', 'search'\] do not match the encoders'"
    ):
        open_stream(f"stream:{schema}", encoders=other)


def test_stream_unseen_category_encodes_as_zero(tmp_path):
    schema = write(tmp_path, clicks())
    data = open_stream(f"stream:{schema}", split="random")
    new = clicks(seed=1).assign(city="atlantis")
    write(tmp_path, new, "new.parquet")
    again = open_stream(
        f"stream:{schema}", split="none", encoders=data.encoders, data=tmp_path / "new.parquet"
    )
    chunks = list(again.test.chunks())
    assert all((c.cat == 0).all() for c in chunks)


def test_cli_stream_errors_are_one_line_exit_2(tmp_path, capsys):
    schema = _bad("NaN label", tmp_path)
    assert main(["train", "--data", f"stream:{schema}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cesaa train: error:") and "first at row 27" in err
    assert len(err.splitlines()) == 1
    assert main(["train", "--data", f"stream:{tmp_path / 'nope.yaml'}", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- configuration ------------------------------------------------------------------------------


def test_k_below_one(capsys):
    assert main(["train", "--data", SRC, "--set", "model.top_k=0", "--quiet"]) == 2
    assert "top_k=0 must be in [1, num_experts=8]" in capsys.readouterr().err


# ---- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "run"
    cfg = default_config("cesaa", expert_hidden=(8,), expert_dim=4, tower_hidden=(4,))
    train(cfg, TrainConfig(epochs=1, batch_size=256), load_data(SRC), out)
    return out


def _tampered(run: Path, tmp_path: Path, edit) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(run, d)
    meta = json.loads((d / "meta.json").read_text())
    edit(meta)
    (d / "meta.json").write_text(json.dumps(meta))
    return d


TAMPERED = {
    "weights hash edited": (
        lambda m: m.update(weights_sha256="0" * 64),
        r"model\.safetensors: sha256 does not match meta\.json",
    ),
    "unknown config key": (
        lambda m: m["model"]["config"].update(evil=1),
        r"meta\.json: invalid configuration: ModelConfig: unknown keys \['evil'\]",
    ),
    "unknown model name": (
        lambda m: m["model"]["config"].update(name="gpt"),
        r"meta\.json: unknown model 'gpt'",
    ),
    "spec removed": (
        lambda m: m["data"].pop("spec"),
        r"meta\.json: invalid configuration: 'spec'",
    ),
}


@pytest.mark.parametrize("what", list(TAMPERED))
def test_tampered_meta_json(run, tmp_path, what):
    edit, message = TAMPERED[what]
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_tampered(run, tmp_path, edit))


def test_resume_with_truncated_last_weights(run, tmp_path, capsys):
    d = tmp_path / "copy"
    shutil.copytree(run, d)
    (d / "last.safetensors").write_bytes((d / "last.safetensors").read_bytes()[:64])
    assert main(["train", "--resume", str(d), "--quiet"]) == 2
    assert "last.safetensors: not a valid safetensors file" in capsys.readouterr().err
