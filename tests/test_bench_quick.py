"""Every benchmark's quick mode runs and writes its own section (numbers are not checked: a shared
CI machine cannot time anything reliably).  Together these take about a minute."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import _report  # noqa: E402

BENCHES = {  # module -> (section, extra arguments)
    "speed": ("speed", ["--kernels", "default"]),
    "throughput": ("throughput", []),
    "roofline": ("roofline", []),
    "thread_scaling": ("thread-scaling", []),
    "streaming": ("streaming", []),
    "record_open": ("record_open", []),
    "umap_time": ("umap", []),
    "accuracy": ("accuracy", ["--jobs", "1"]),
    "tune": ("tuning", ["--jobs", "1"]),
    "retrieval": ("retrieval", ["--jobs", "1"]),
    "planted": ("planted", ["--jobs", "1"]),
    "plateau": ("plateau", ["--jobs", "1", "--models", "mlp,mmoe"]),
    "best_shot": ("best_shot_age", ["--jobs", "1", "--publish", "{tmp}/published"]),
    "sweep": ("sweep", ["--jobs", "1", "--out", "{tmp}/sweep"]),
    "noise_floor": ("noise_floor", ["--jobs", "1", "--out", "{tmp}/noise"]),
    "logloss_probe": ("logloss_probe", []),
}
NEEDS_ML100K = {
    "throughput", "roofline", "thread_scaling", "accuracy", "tune", "retrieval", "best_shot", "noise_floor"
}  # fmt: skip


def _rechub() -> bool:
    try:
        import torch_rechub  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def clean_registry():
    """The accuracy/throughput benchmarks register torch-rechub adapters: undo that afterwards."""
    from cesaa.models import registry

    before, spaces = dict(registry._REGISTRY), dict(registry._SPACES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    registry._SPACES.clear()
    registry._SPACES.update(spaces)


def test_rechub_adapters_are_tuned_over_our_mmoe_and_ple_spaces(clean_registry) -> None:
    """`cesaa bench --setup bench._rechub:register` gives the peers the same choices as ours."""
    pytest.importorskip("torch_rechub")
    from bench import _rechub
    from cesaa.models import registry, search_spaces

    assert _rechub.register() is None
    assert registry.model_search_space("rechub_mmoe") is search_spaces.mmoe
    assert registry.model_search_space("rechub_ple") is search_spaces.ple


@pytest.mark.parametrize("module", list(BENCHES))
def test_quick_mode_writes_its_section(module, tmp_path, clean_registry, request) -> None:
    if module in NEEDS_ML100K:
        request.getfixturevalue("ml100k_path")
    section, extra = BENCHES[module]
    extra = [a.format(tmp=tmp_path) for a in extra]
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        "# Benchmarks\n\n<!-- bench:dashboard -->\nkept as is\n<!-- /bench:dashboard -->\n",
        encoding="utf-8",
    )
    mod = importlib.import_module(f"bench.{module}")
    assert mod.main(["--quick", "--docs", str(docs), *extra]) == 0
    text = docs.read_text(encoding="utf-8")
    assert text.count(f"<!-- bench:{section} -->") == 1
    assert text.count(f"<!-- /bench:{section} -->") == 1
    assert "<!-- bench:dashboard -->\nkept as is\n<!-- /bench:dashboard -->" in text
    body = text.split(f"<!-- bench:{section} -->")[1].split(f"<!-- /bench:{section} -->")[0]
    assert f"python -m bench.{module} --quick" in body
    assert "Quick mode" in body and "Machine:" in body
    if module == "speed":  # the goal cases rerun with torch's kernels restricted, and it took
        assert "| `default` (torch: DEFAULT) |" in body and "| `as run above` (torch: " in body
        assert "**Across kernel sets:** E=16, k=2: worst" in body
        # the goals at both thread counts, side by side (quick mode runs at 1 thread)
        table = body.split("### The goals at 1 and 2 threads")[1]
        assert "Goals (time ratio / FLOP ratio, 1 torch thread)" in body
        assert [line.split("|")[1].strip() for line in table.splitlines()[4:6]] == ["1", "2"]
    if module == "thread_scaling":  # both thread counts for each model, operators summed
        for model in ("cesaa", "mmoe"):
            assert f"| {model} |" in body
            assert f"### {model}: operators of one training step" in body
        assert body.count("| whole step |") == 2 and "| `_grouped_mm` |" in body
        # the efficiency table: CESAA against both dense MoEs at the first --widths item
        for model in ("cesaa", "mmoe", "mmoe-9"):
            assert f"| 64 -> 32 | {model} |" in body
    if module == "best_shot":  # --publish: the leaderboard files and the runs, linked from the body
        import json

        pub = tmp_path / "published"
        names = {"leaderboard.md", "leaderboard.csv", "leaderboard.json", "leaderboard.html"}
        assert names | {"runs.json"} <= {p.name for p in pub.iterdir()}
        runs = json.loads((pub / "runs.json").read_text(encoding="utf-8"))
        assert sorted((r["model"], r["seed"]) for r in runs) == [
            ("cesaa", 0), ("cesaa", 1), ("mlp", 0), ("mlp", 1)
        ]  # fmt: skip
        assert f"`{pub.resolve()}` (written from" in body
    if module in ("accuracy", "throughput"):
        assert ("torch-rechub MMoE" in body) == _rechub()
        if not _rechub():
            assert "torch-rechub rows skipped" in body


def test_rechub_rows_are_skipped_with_a_reason_when_missing(
    tmp_path, clean_registry, monkeypatch, ml100k_path
) -> None:
    from bench import _common, throughput

    monkeypatch.setattr(_common, "rechub_status", lambda: "torch_rechub is not importable (test)")
    docs = tmp_path / "b.md"
    assert throughput.main(["--quick", "--docs", str(docs)]) == 0
    text = docs.read_text(encoding="utf-8")
    assert "torch-rechub rows skipped: torch_rechub is not importable (test)" in text
    assert "| torch-rechub MMoE |" not in text


@pytest.mark.skipif(not _rechub(), reason="torch_rechub is not importable (the 'bench' extra)")
def test_rechub_adapters_train_with_our_trainer(small_data, clean_registry) -> None:
    import torch

    from bench import _rechub
    from cesaa.config import TrainConfig
    from cesaa.models import build_model, default_config
    from cesaa.train import train

    assert _rechub.register() is None
    for name in _rechub.NAMES:
        model = build_model(default_config(name), small_data.spec)
        b = next(small_data.train.batches(64))
        out = model(b.cat, b.num, b.domain)
        assert out.logit.shape == (64,)
        # each row reads its own domain's head: changing another domain's tower leaves it alone
        d0 = b.domain == 0
        with torch.no_grad():
            model.net.towers[1].mlp[-1].bias.add_(5.0)
        out2 = model(b.cat, b.num, b.domain)
        assert torch.allclose(out.logit[d0], out2.logit[d0])
        res = train(default_config(name), TrainConfig(epochs=1, device="cpu"), small_data)
        assert 0.0 <= res.test_metrics["auc"] <= 1.0


def test_replace_section_creates_replaces_and_keeps_others(tmp_path) -> None:
    path = tmp_path / "docs" / "benchmarks.md"
    _report.write_section("speed", "first", path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "<!-- bench:speed -->\nfirst\n" in text
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0600
    with open(path, "a", encoding="utf-8") as f:
        f.write("\nhand-written\n\n<!-- bench:dashboard -->\ntheirs\n<!-- /bench:dashboard -->\n")
    _report.write_section("speed", "second", path)
    _report.write_section("accuracy", "acc", path)
    text = path.read_text(encoding="utf-8")
    assert "first" not in text and "<!-- bench:speed -->\nsecond\n<!-- /bench:speed -->" in text
    assert "hand-written" in text and "<!-- bench:dashboard -->\ntheirs\n" in text
    assert text.index("bench:speed") < text.index("bench:dashboard") < text.index("bench:accuracy")


def test_replace_section_rejects_broken_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        _report.replace_section("<!-- bench:speed -->\nno end\n", "speed", "x")
    with pytest.raises(ValueError, match="section name"):
        _report.replace_section("", "bad name", "x")


def test_mean_std_format() -> None:
    assert _report.pm([1.0, 3.0], 2) == "2.00 ± 1.41"
    assert _report.pm([2.0], 1) == "2.0 ± 0.0"
    assert _report.pm([float("nan")]) == "n/a"


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw

processor\t: 1
model name\t: some other name
"""


def test_cpu_description_names_the_generation_a_vm_hides() -> None:
    """A VM that shows only "AMD EPYC" still tells family, model, stepping and vector extensions
    (what separates one machine's speed ratios from another's); the first processor is read."""
    assert _report.cpu_description(CPUINFO) == (
        "AMD EPYC (cpu family 25, model 17, stepping 1, AVX2, AVX-512)"
    )
    intel = "model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nflags\t: avx2 amx_tile\n"
    assert _report.cpu_description(intel) == (
        "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz (AVX2, AMX)"
    )
    assert _report.cpu_description("processor\t: 0\nflags\t: avx2\n") is None


def test_kernel_table_takes_the_worst_set_for_each_goal() -> None:
    from bench import _kernels

    goals = ((16, 2, 1.3), (32, 1, 1.6))
    results = [
        {"requested": "avx512", "kernels": "AVX512", "E16k2": 0.9, "E32k1": 1.1},
        {"requested": "avx2", "kernels": "AVX2", "E16k2": 1.4, "E32k1": 1.2},
    ]
    text = _kernels.kernel_table(results, goals)
    assert "| `avx512` (torch: AVX512) | 0.90x (met) | 1.10x (met) |" in text
    assert "| `avx2` (torch: AVX2) | 1.40x (missed) | 1.20x (met) |" in text
    assert (
        "**Across kernel sets:** E=16, k=2: worst 1.40x, **missed** under at least one; "
        "E=32, k=1: worst 1.20x, **met** under every set."
    ) in text


def test_speed_refuses_an_unknown_kernel_set_by_name(capsys) -> None:
    from bench import speed

    with pytest.raises(SystemExit):
        speed.main(["--quick", "--docs", "-", "--kernels", "avx2,sse9"])
    assert "--kernels: unknown kernel set(s) ['sse9']" in capsys.readouterr().err
