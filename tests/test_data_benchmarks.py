"""KuaiRand-1K, Ali-CCP, MIND and Douban loaders on the distributed samples in ../shared/data.

Expected counts were taken with the csv module from the files (and match their PROVENANCE.md);
each fixture is skipped only when the shared data folder is absent.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from cesaa.data import load_data
from cesaa.data.benchmarks import load_benchmark, read_benchmark

DATA_DIR = Path(
    os.environ.get("CESAA_DATA_DIR", Path(__file__).parents[1] / ".." / "shared" / "data")
)
KUAIRAND = DATA_DIR / "kuairand-sample" / "kuairand_sample.csv"
ALICCP = DATA_DIR / "ali-ccp-sample" / "scenario-wise-rec"
ALICCP_RECHUB = DATA_DIR / "ali-ccp-sample" / "torch-rechub"
MIND = DATA_DIR / "mind-sample" / "mind_sample.csv"
DOUBAN = DATA_DIR / "douban-sample" / "douban_sample.csv"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"sample {path} not found (set CESAA_DATA_DIR to the shared data folder)")
    return path


def all_rows(data, name: str) -> torch.Tensor:
    return torch.cat([getattr(data.train, name), getattr(data.val, name), getattr(data.test, name)])


def domain_counts(data) -> list[int]:
    return torch.bincount(all_rows(data, "domain"), minlength=data.spec.num_domains).tolist()


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a CSV with ``edit(header, rows) -> (header, rows)`` applied (rows as lists of str)."""
    with open(src, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    header, rows = edit(header, rows)
    with open(dst, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return dst


# --------------------------------------------------------------------------- counts


def test_kuairand_sample_counts():
    data = load_data(f"kuairand:{need(KUAIRAND)}")
    assert len(data.train) + len(data.val) + len(data.test) == 200
    assert data.spec.domain_names == ("tab1",)  # the sample only has tab 1
    assert domain_counts(data) == [200]
    assert all_rows(data, "label").sum().item() == 32
    assert len(torch.unique(all_rows(data, "user"))) == 145
    assert data.spec.num_names == (
        "follow_user_num", "fans_user_num", "friend_user_num", "register_days",
    )  # fmt: skip
    assert "tab" not in data.spec.cat_names and "play_time_ms" not in data.spec.cat_names
    assert len(data.spec.cat_names) == 32
    assert data.description["kind"] == "kuairand" and data.description["dropped_rows"] == 0


def test_aliccp_sample_counts_and_file_split():
    data = load_data(f"aliccp:{need(ALICCP)}", split="files")
    assert (len(data.train), len(data.val), len(data.test)) == (100, 50, 50)
    assert data.spec.domain_names == ("scenario1", "scenario2", "scenario3")
    assert torch.bincount(data.train.domain).tolist() == [69, 19, 12]
    assert torch.bincount(data.val.domain).tolist() == [38, 7, 5]
    assert torch.bincount(data.test.domain).tolist() == [39, 6, 5]
    assert [t.label.sum().item() for t in (data.train, data.val, data.test)] == [7, 3, 6]
    assert len(data.spec.cat_names) == 22 and "301" not in data.spec.cat_names
    assert len(data.spec.num_names) == 8
    assert data.description["rows_per_file"] == [100, 50, 50]
    shuffled = load_data(f"aliccp:{ALICCP}")  # the default random 8:1:1 over all 200 rows
    assert (len(shuffled.train), len(shuffled.val), len(shuffled.test)) == (160, 20, 20)
    assert domain_counts(shuffled) == [146, 32, 22]


def test_aliccp_torch_rechub_copy_is_one_domain():
    data = load_benchmark("aliccp", need(ALICCP_RECHUB))
    assert data.spec.domain_names == ("scenario1",)
    assert domain_counts(data) == [200]


def test_mind_sample_counts():
    data = load_data(f"mind:{need(MIND)}")
    assert data.spec.domain_names == ("news", "lifestyle", "sports", "finance")
    assert domain_counts(data) == [3742, 1565, 1428, 1265]
    label, domain = all_rows(data, "label"), all_rows(data, "domain")
    assert [int(label[domain == d].sum()) for d in range(4)] == [163, 60, 84, 56]
    assert data.spec.cat_names == ("User_ID", "News_ID", "SubCategory")
    assert len(torch.unique(all_rows(data, "user"))) == 7892


def test_douban_sample_counts():
    data = load_data(f"douban:{need(DOUBAN)}")
    assert data.spec.domain_names == ("book", "music", "movie")
    assert domain_counts(data) == [364, 337, 2299]
    label, domain = all_rows(data, "label"), all_rows(data, "domain")
    assert [int(label[domain == d].sum()) for d in range(3)] == [259, 262, 1415]
    assert data.spec.cat_names == ("user_id", "item_id", "living_place", "time_bin")


# --------------------------------------------------------------------------- bad files


def test_kuairand_other_tabs_are_dropped_and_counted(tmp_path):
    def edit(header, rows):
        i = header.index("tab")
        for r in rows[:50]:
            r[i] = "3"  # not one of Scenario-Wise Rec's tabs 0 / 1 / 2 / 4 / 6
        for r in rows[50:80]:
            r[i] = "6"
        return header, rows

    path = rewrite(need(KUAIRAND), tmp_path / "k.csv", edit)
    df, schema, facts = read_benchmark("kuairand", path)
    assert facts["dropped_rows"] == 50 and len(df) == 150
    assert schema.domains == ("tab1", "tab6")
    data = load_benchmark("kuairand", path)
    assert domain_counts(data) == [120, 30]


def test_kuairand_only_other_tabs_is_an_error(tmp_path):
    def edit(header, rows):
        i = header.index("tab")
        return header, [r[:i] + ["9"] + r[i + 1 :] for r in rows]

    path = rewrite(need(KUAIRAND), tmp_path / "k.csv", edit)
    with pytest.raises(ValueError, match=r"no rows left .*200 rows in other 'tab' values"):
        load_benchmark("kuairand", path)


def test_missing_column_names_file_and_column(tmp_path):
    def edit(header, rows):
        i = header.index("tab")
        return header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in rows]

    path = rewrite(need(KUAIRAND), tmp_path / "k.csv", edit)
    with pytest.raises(ValueError, match=r"k\.csv: kuairand columns \['tab'\] are missing"):
        load_benchmark("kuairand", path)


def test_unknown_domain_value_names_file_column_value_and_row(tmp_path):
    def edit(header, rows):
        rows[5][header.index("Category")] = "weather"
        return header, rows

    path = rewrite(need(MIND), tmp_path / "m.csv", edit)
    with pytest.raises(
        ValueError,
        match=r"m\.csv: domain column 'Category' has values \['weather'\] \(first at row 5\)",
    ):
        load_data(f"mind:{path}")


def test_non_binary_label_names_file_column_and_value(tmp_path):
    def edit(header, rows):
        rows[7][header.index("rating")] = "4"  # a raw rating, not the binarized label
        return header, rows

    path = rewrite(need(DOUBAN), tmp_path / "d.csv", edit)
    with pytest.raises(ValueError, match=r"d\.csv: label column 'rating' must be binary.*\[4\]"):
        load_benchmark("douban", path)


def test_non_numeric_dense_column_is_named(tmp_path):
    folder = tmp_path / "ali"
    folder.mkdir()
    for part in ("train", "val", "test"):
        src = need(ALICCP) / f"ali_ccp_{part}_sample.csv"

        def edit(header, rows, part=part):
            if part == "val":
                rows[2][header.index("D508")] = "n/a"
            return header, rows

        rewrite(src, folder / src.name, edit)
    with pytest.raises(
        ValueError,
        match=r"ali_ccp_val_sample\.csv: numeric column 'D508' has 1 NaN/infinite value\(s\), "
        r"first at row 2",
    ):
        load_benchmark("aliccp", folder)
    val = need(ALICCP) / "ali_ccp_val_sample.csv"
    (folder / val.name).write_bytes(val.read_bytes())  # repaired

    def text(header, rows):
        rows[4][header.index("D702")] = "abc"
        return header, rows

    rewrite(need(ALICCP) / "ali_ccp_test_sample.csv", folder / "ali_ccp_test_sample.csv", text)
    with pytest.raises(
        ValueError, match=r"ali_ccp_test_sample\.csv: numeric column 'D702' is not numeric"
    ):
        load_benchmark("aliccp", folder)


def test_missing_aliccp_part_and_bad_paths(tmp_path):
    folder = tmp_path / "ali"
    folder.mkdir()
    for part in ("train", "test"):
        name = f"ali_ccp_{part}_sample.csv"
        (folder / name).write_bytes((need(ALICCP) / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"expected one ali_ccp_val\*\.csv"):
        load_benchmark("aliccp", folder)
    with pytest.raises(ValueError, match="douban data .* is a folder; give the CSV file"):
        load_benchmark("douban", tmp_path)
    with pytest.raises(FileNotFoundError, match="mind data .*nope.csv does not exist"):
        load_data(f"mind:{tmp_path / 'nope.csv'}")
    with pytest.raises(ValueError, match=r"'mind': give the data path, e\.g\. mind:PATH"):
        load_data("mind")
    with pytest.raises(ValueError, match="split='files' needs an Ali-CCP folder"):
        load_benchmark("mind", need(MIND), split="files")
    with pytest.raises(ValueError, match="unknown benchmark 'criteo'"):
        load_benchmark("criteo", tmp_path)


# --------------------------------------------------------------------------- KuaiRand's own folder

USER_HEADER = (
    "user_id,user_active_degree,is_lowactive_period,is_live_streamer,is_video_author,"
    "follow_user_num,follow_user_num_range,fans_user_num,fans_user_num_range,friend_user_num,"
    "friend_user_num_range,register_days,register_days_range,"
    + ",".join(f"onehot_feat{i}" for i in range(18))
)


def _user(uid: int, degree: str) -> str:
    onehot = ",".join(str(i % 3) for i in range(17)) + ","  # onehot_feat17 missing
    return f'{uid},{degree},0,0,0,{uid * 3},"(0,10]",5,"[1,10)",0,0,100,91-180,{onehot}'


def write_kuairand_folder(folder: Path) -> Path:
    folder.mkdir()
    log = ["user_id,video_id,date,is_click,play_time_ms,duration_ms,profile_stay_time,"
           "comment_stay_time,is_rand,tab"]  # fmt: skip
    rows = [
        (0, 10, 1, 0),
        (0, 11, 0, 1),
        (1, 10, 1, 1),
        (1, 12, 0, 4),
        (2, 11, 0, 2),
        (7, 10, 1, 1),
        (2, 10, 0, 9),
        (1, 99, 1, 6),
    ]  # fmt: skip  user 7, video 99 unknown
    log += [f"{u},{v},20220422,{c},100,2000,0,0,0,{t}" for u, v, c, t in rows[:5]]
    (folder / "log_standard_4_08_to_4_21_1k.csv").write_text("\n".join(log) + "\n")
    log2 = [log[0]] + [f"{u},{v},20220501,{c},100,2000,0,0,0,{t}" for u, v, c, t in rows[5:]]
    (folder / "log_standard_4_22_to_5_08_1k.csv").write_text("\n".join(log2) + "\n")
    users = [USER_HEADER, _user(0, "high_active"), _user(1, "full_active"), _user(2, "UNKNOWN")]
    (folder / "user_features_1k.csv").write_text("\n".join(users) + "\n")
    videos = ["video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
              "server_width,server_height,music_id,music_type,tag",
              "10,5,NORMAL,2022-01-01,ShortImport,public,2000,720,1280,1,9,28",
              "11,6,AD,2022-01-02,ShortImport,public,3000,,,2,9,9",
              "12,7,NORMAL,2022-01-03,Web,private,1000,720,1280,3,9,1"]  # fmt: skip
    (folder / "video_features_basic_1k.csv").write_text("\n".join(videos) + "\n")
    return folder


def test_kuairand_folder_as_distributed(tmp_path):
    folder = write_kuairand_folder(tmp_path / "data")
    df, schema, facts = read_benchmark("kuairand", folder)
    # 8 log rows: user 7 and video 99 have no features (inner joins), tab 9 is not a domain
    assert facts["unjoined_rows"] == 2 and facts["dropped_rows"] == 1 and len(df) == 5
    assert schema.domains == ("tab0", "tab1", "tab2", "tab4")
    assert len(facts["files"]) == 4  # two logs, user and video features
    row = df[(df["user_id"] == "1") & (df["video_id"] == "12")].iloc[0]
    assert (row["user_active_degree"], row["follow_user_num_range"], row["video_type"]) == (
        "full_active", "(0,10]", "NORMAL",
    )  # fmt: skip
    assert row["follow_user_num"] == 3 and pd.isna(row["onehot_feat17"])
    assert df["is_click"].tolist() == [1, 0, 1, 0, 0]  # log order after the joins
    data = load_data(f"kuairand:{folder}")
    assert domain_counts(data) == [1, 2, 1, 1]
    assert data.description["unjoined_rows"] == 2


def test_kuairand_folder_problems_are_named(tmp_path):
    folder = write_kuairand_folder(tmp_path / "data")
    (folder / "video_features_basic_1k.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected one video_features_basic_\*\.csv"):
        load_benchmark("kuairand", folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder without log_standard_"):
        load_benchmark("kuairand", empty)


def test_train_and_bench_keep_aliccps_distributed_files(tmp_path, capsys) -> None:
    """`--split files` reaches the loader from `cesaa train` and from `cesaa bench`."""
    import json

    from cesaa import cli
    from cesaa.data.splits import TRAIN_SPLITS

    assert cli.TRAIN_SPLITS == TRAIN_SPLITS  # the CLI's torch-free copy agrees
    src = f"aliccp:{need(ALICCP)}"
    run = tmp_path / "run"
    args = ["train", "--data", src, "--model", "mlp", "--split", "files", "--out", str(run)]
    sets = ["--set", "train.epochs=1", "--set", "train.min_steps=0", "--quiet"]
    assert cli.main([*args, *sets]) == 0
    meta = json.loads((run / "meta.json").read_text())
    assert meta["data"]["description"]["split"] == "files"
    assert "(100/50/50 rows" in capsys.readouterr().out  # the files' rows, not 160/20/20
    out = tmp_path / "bench"
    bench = ["bench", "--data", src, "--models", "mlp", "--split", "files", "--seeds", "1"]
    assert cli.main([*bench, "--epochs", "1", "--set", "train.min_steps=0", "--out", str(out)]) == 0
    lb = json.loads((out / "leaderboard.json").read_text())
    assert "--split files" in lb["meta"]["command"]
    (rec,) = json.loads((out / "runs.json").read_text())
    assert rec["test"]["rows"] == 50 and rec["val"]["rows"] == 50  # the distributed files' rows
