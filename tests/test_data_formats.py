"""Dataset formats and spec strings, checked on tiny trees with each format's real names.

The loaders never open the images, so fixture images are empty files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reid.data import (
    DATASET_FORMATS,
    DISTRACTOR_PID,
    JUNK_PID,
    DatasetError,
    ReIDDataset,
    label_arrays,
    load_dataset,
    parse_spec,
)
from reid.data.__main__ import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_market_layout(root: Path, names: dict[str, list[str]]) -> Path:
    """``names`` maps ``bounding_box_train`` / ``bounding_box_test`` / ``query`` to file names."""
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names.get(folder, []):
            touch(root / folder / name)
    return root


MARKET_NAMES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c1s1_000551_01.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s3_015126_02.jpg",
        "-1_c1s1_000401_03.jpg",
        "0000_c2s1_000151_01.jpg",
    ],
    "query": ["0002_c4s2_000301_00.jpg", "0007_c6s4_002202_00.jpg"],
    "bounding_box_test": [
        "0002_c5s1_000776_01.jpg",
        "0007_c1s6_012345_04.jpg",
        "0000_c1s1_000151_01.jpg",
        "-1_c6s1_000401_02.jpg",
    ],
}


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return make_market_layout(tmp_path / "market", MARKET_NAMES)


def record_named(dataset: ReIDDataset, split: str, name: str):
    (record,) = [r for r in dataset.split(split) if r.path.name == name]
    return record


# --------------------------------------------------------------------------- specs


def test_parse_spec_splits_format_and_path_and_expands_home(monkeypatch, tmp_path):
    """``FORMAT:PATH``: the format is case-insensitive, ``~`` is expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = parse_spec("Market1501:~/data/market")
    assert spec.format == "market1501"
    assert spec.path == tmp_path / "data" / "market"
    assert str(spec) == f"market1501:{tmp_path / 'data' / 'market'}"


def test_spec_with_unknown_format_lists_the_valid_formats():
    with pytest.raises(DatasetError) as err:
        parse_spec("cuhk03:/data/cuhk")
    message = str(err.value)
    assert "'cuhk03'" in message
    for name in DATASET_FORMATS:
        assert name in message


def test_spec_without_colon_shows_the_expected_form():
    with pytest.raises(DatasetError, match=r"FORMAT:PATH"):
        parse_spec("/data/Market-1501")


def test_spec_without_path_is_an_error():
    with pytest.raises(DatasetError, match="no path"):
        parse_spec("market1501:")


def test_dataset_formats_are_the_closed_documented_set():
    assert set(DATASET_FORMATS) == {"market1501", "dukemtmc", "msmt17", "folder", "synthetic"}


def test_relative_spec_paths_are_read_from_the_current_directory(market, monkeypatch):
    monkeypatch.chdir(market.parent)
    dataset = load_dataset("market1501:market")
    assert dataset.root == market
    assert all(r.path.is_absolute() for r in dataset.train)


# ----------------------------------------------------------------------- Market-1501


def test_market_parses_pid_camera_and_frame_from_names(market):
    dataset = load_dataset(f"market1501:{market}")
    record = record_named(dataset, "train", "0007_c3s3_015126_02.jpg")
    assert (record.pid, record.camid, record.frame) == (7, 2, 15126)
    assert record.path == market / "bounding_box_train" / "0007_c3s3_015126_02.jpg"
    query = record_named(dataset, "query", "0002_c4s2_000301_00.jpg")
    assert (query.pid, query.camid, query.frame) == (2, 3, 301)


def test_market_drops_junk_and_distractors_from_train_and_counts_them(market):
    dataset = load_dataset(f"market1501:{market}")
    assert {r.pid for r in dataset.train} == {2, 7}
    assert len(dataset.train) == 4
    assert dataset.dropped == {"train: junk (pid -1)": 1, "train: distractor (pid 0)": 1}


def test_market_keeps_junk_and_distractors_in_gallery(market):
    dataset = load_dataset(f"market1501:{market}")
    assert sorted(r.pid for r in dataset.gallery) == [JUNK_PID, DISTRACTOR_PID, 2, 7]
    junk = record_named(dataset, "gallery", "-1_c6s1_000401_02.jpg")
    assert junk.is_junk and junk.camid == 5


def test_market_summary_table_counts_ids_images_cameras_distractors_junk(market):
    dataset = load_dataset(f"market1501:{market}")
    rows = {s.split: s for s in dataset.summaries()}
    assert (rows["train"].ids, rows["train"].images, rows["train"].cameras) == (2, 4, 3)
    assert (rows["query"].ids, rows["query"].images, rows["query"].cameras) == (2, 2, 2)
    gallery = rows["gallery"]
    assert (gallery.ids, gallery.images, gallery.cameras) == (2, 4, 3)
    assert (gallery.distractors, gallery.junk, gallery.unlabeled) == (1, 1, 0)
    table = dataset.summary()
    assert "Dataset market1501" in table
    assert "dropped 1 image(s): train: junk (pid -1)" in table


def test_market_records_are_sorted_by_path(market):
    dataset = load_dataset(f"market1501:{market}")
    for split in ("train", "query", "gallery"):
        paths = [str(r.path) for r in dataset.split(split)]
        assert paths == sorted(paths)


def test_market_evaluation_labels_come_out_as_arrays(market):
    pids, camids = label_arrays(load_dataset(f"market1501:{market}").query)
    assert pids.tolist() == [2, 7] and camids.tolist() == [3, 5]


def test_market_malformed_name_is_an_error_naming_the_file_and_the_convention(market):
    touch(market / "query" / "0002_c1_000451.jpg")
    with pytest.raises(DatasetError) as err:
        load_dataset(f"market1501:{market}")
    assert "0002_c1_000451.jpg" in str(err.value)
    assert "0002_c1s1_000451_03.jpg" in str(err.value)


def test_market_camera_zero_is_malformed(market):
    touch(market / "bounding_box_test" / "0002_c0s1_000451_03.jpg")
    with pytest.raises(DatasetError, match=r"0002_c0s1_000451_03\.jpg"):
        load_dataset(f"market1501:{market}")


def test_market_accepts_cameras_beyond_nine(market):
    """Generated data may have more than nine cameras: ``c12`` is camid 11."""
    touch(market / "query" / "0003_c12s1_000100_01.jpg")
    record = record_named(load_dataset(f"market1501:{market}"), "query", "0003_c12s1_000100_01.jpg")
    assert (record.pid, record.camid) == (3, 11)


def test_market_non_image_files_and_subfolders_are_counted_not_read(market):
    touch(market / "query" / "Thumbs.db")
    (market / "bounding_box_train" / "extra").mkdir()
    dataset = load_dataset(f"market1501:{market}")
    assert len(dataset.query) == 2
    reasons = dataset.dropped
    assert reasons["query: not an image file (only *.jpg/*.jpeg/*.png are read)"] == 1
    assert reasons["train: sub-folder ignored"] == 1


def test_market_png_and_uppercase_suffixes_are_images(market):
    touch(market / "query" / "0009_c2s1_000100_01.PNG")
    dataset = load_dataset(f"market1501:{market}")
    assert record_named(dataset, "query", "0009_c2s1_000100_01.PNG").pid == 9


def test_market_missing_folder_is_named_with_the_expected_layout(market):
    shutil.rmtree(market / "query")
    with pytest.raises(DatasetError) as err:
        load_dataset(f"market1501:{market}")
    assert "'query'" in str(err.value)
    assert "bounding_box_train/" in str(err.value)


def test_market_missing_root_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"market1501:{tmp_path / 'nowhere'}")


def test_market_accepts_a_root_holding_a_single_market_folder(tmp_path):
    inner = make_market_layout(tmp_path / "Market-1501-v15.09.15", MARKET_NAMES)
    touch(tmp_path / "Market-1501-v15.09.15.zip")
    dataset = load_dataset(f"market1501:{tmp_path}")
    assert dataset.root == inner
    assert len(dataset.query) == 2


def test_market_refuses_to_guess_between_several_market_folders(tmp_path):
    make_market_layout(tmp_path / "Market-1501-a", MARKET_NAMES)
    make_market_layout(tmp_path / "Market-1501-b", MARKET_NAMES)
    with pytest.raises(DatasetError, match="Market-1501-a, Market-1501-b"):
        load_dataset(f"market1501:{tmp_path}")


# --------------------------------------------------------------------- DukeMTMC-reID


def make_duke(root: Path) -> Path:
    return make_market_layout(
        root,
        {
            "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c6_f0030000.jpg"],
            "query": ["0005_c8_f0123456.jpg"],
            "bounding_box_test": ["0005_c1_f0000001.jpg", "0042_c3_f0099999.jpg"],
        },
    )


def test_duke_parses_pid_camera_and_frame_after_f(tmp_path):
    dataset = load_dataset(f"dukemtmc:{make_duke(tmp_path / 'duke')}")
    record = record_named(dataset, "train", "0001_c2_f0046182.jpg")
    assert (record.pid, record.camid, record.frame) == (1, 1, 46182)
    query = record_named(dataset, "query", "0005_c8_f0123456.jpg")
    assert (query.pid, query.camid, query.frame) == (5, 7, 123456)
    assert [s.images for s in dataset.summaries()] == [2, 1, 2]


def test_duke_rejects_market_style_names(tmp_path):
    root = make_duke(tmp_path / "duke")
    touch(root / "query" / "0002_c1s1_000451_03.jpg")
    with pytest.raises(DatasetError, match=r"0002_c1s1_000451_03\.jpg.*0001_c2_f0046182\.jpg"):
        load_dataset(f"dukemtmc:{root}")


def test_duke_accepts_a_root_holding_the_dukemtmc_reid_folder(tmp_path):
    inner = make_duke(tmp_path / "DukeMTMC-reID")
    assert load_dataset(f"dukemtmc:{tmp_path}").root == inner


# ---------------------------------------------------------------------------- MSMT17

MSMT_LISTS = {
    "list_train.txt": [
        "0000/0000_000_01_0303morning_0015_0.jpg 0",
        "0001/0001_003_07_0303noon_0200_1.jpg 1",
    ],
    "list_val.txt": ["0001/0001_010_15_0303afternoon_0300_0.jpg 1"],
    "list_query.txt": ["0004/0004_002_03_0113morning_0521_0.jpg 4"],
    "list_gallery.txt": [
        "0004/0004_005_12_0113noon_0777_2.jpg 4",
        "0009/0009_000_02_0113noon_0001_0.jpg 9",
    ],
}


def make_msmt(root: Path, version: str = "V1") -> Path:
    train_dir, test_dir = (
        ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    )
    for list_name, lines in MSMT_LISTS.items():
        touch(root / list_name).write_text("\n".join(lines) + "\n")
        image_dir = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for line in lines:
            touch(root / image_dir / line.split()[0])
    return root


def test_msmt_train_is_list_train_plus_list_val(tmp_path):
    dataset = load_dataset(f"msmt17:{make_msmt(tmp_path / 'msmt')}")
    assert [r.path.name for r in dataset.train] == [
        "0000_000_01_0303morning_0015_0.jpg",
        "0001_003_07_0303noon_0200_1.jpg",
        "0001_010_15_0303afternoon_0300_0.jpg",
    ]
    assert [s.images for s in dataset.summaries()] == [3, 1, 2]


def test_msmt_camera_comes_from_the_third_name_field_and_pids_shift_by_one(tmp_path):
    """List pid 0 is a real person; 0 means distractor here, so pids become k + 1."""
    root = make_msmt(tmp_path / "msmt")
    dataset = load_dataset(f"msmt17:{root}")
    first = record_named(dataset, "train", "0000_000_01_0303morning_0015_0.jpg")
    assert (first.pid, first.camid, first.frame) == (1, 0, None)
    assert first.path == root / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg"
    val = record_named(dataset, "train", "0001_010_15_0303afternoon_0300_0.jpg")
    assert (val.pid, val.camid) == (2, 14)
    gallery = record_named(dataset, "gallery", "0009_000_02_0113noon_0001_0.jpg")
    assert (gallery.pid, gallery.camid) == (10, 1)
    assert gallery.path.parent.parent == root / "test"
    assert not any(r.is_distractor for s in ("train", "query", "gallery") for r in dataset.split(s))


def test_msmt_v2_mask_folders_are_read(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V2", version="V2")
    dataset = load_dataset(f"msmt17:{tmp_path}")
    assert dataset.root == root
    assert dataset.query[0].path.parent.parent == root / "mask_test_v2"


def test_msmt_malformed_line_names_the_list_file_and_line_number(tmp_path):
    root = make_msmt(tmp_path / "msmt")
    (root / "list_query.txt").write_text(
        "0004/0004_002_03_0113morning_0521_0.jpg 4\n0004/0004_002_03_0113morning_0521_0.jpg\n"
    )
    with pytest.raises(DatasetError, match=r"list_query\.txt:2: expected 'RELATIVE/PATH\.jpg PID'"):
        load_dataset(f"msmt17:{root}")


def test_msmt_name_without_camera_field_is_an_error(tmp_path):
    root = make_msmt(tmp_path / "msmt")
    (root / "list_val.txt").write_text("0001/photo.jpg 1\n")
    with pytest.raises(DatasetError, match=r"list_val\.txt:1: file name 'photo\.jpg'"):
        load_dataset(f"msmt17:{root}")


def test_msmt_missing_images_are_counted_and_the_first_ones_named(tmp_path):
    root = make_msmt(tmp_path / "msmt")
    (root / "test" / "0009" / "0009_000_02_0113noon_0001_0.jpg").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(f"msmt17:{root}")
    message = str(err.value)
    assert "list_gallery.txt" in message and "1 listed image(s) missing" in message
    assert "0009/0009_000_02_0113noon_0001_0.jpg" in message


def test_msmt_missing_list_file_is_named(tmp_path):
    root = make_msmt(tmp_path / "msmt")
    (root / "list_gallery.txt").unlink()
    with pytest.raises(DatasetError, match=r"'list_gallery\.txt'"):
        load_dataset(f"msmt17:{root}")


def test_msmt_missing_image_folders_are_reported(tmp_path):
    root = tmp_path / "msmt"
    for name in MSMT_LISTS:
        touch(root / name)
    with pytest.raises(DatasetError, match=r"train/ \+ test/ \(V1\)"):
        load_dataset(f"msmt17:{root}")


# ------------------------------------------------------------------------- folder


def make_folder(root: Path, manifest: str, images: list[str]) -> Path:
    for name in images:
        touch(root / name)
    path = root / "manifest.csv"
    path.write_text(manifest)
    return path


FOLDER_IMAGES = ["cam1/a.jpg", "cam1/b.jpg", "cam2/c.jpg", "cam2/d.jpg", "cam3/e.jpg"]
FOLDER_MANIFEST = """path,pid,camid,timestamp,split
cam1/a.jpg,7,0,12.5,train
cam2/c.jpg,,1,,train
cam1/b.jpg,0,0,13,
cam2/d.jpg,7,1,14.25,query
cam3/e.jpg,7,2,15,gallery
"""


def test_folder_manifest_reads_pid_camid_timestamp_and_split(tmp_path):
    manifest = make_folder(tmp_path / "cams", FOLDER_MANIFEST, FOLDER_IMAGES)
    dataset = load_dataset(f"folder:{manifest}")
    a = record_named(dataset, "train", "a.jpg")
    assert (a.pid, a.camid, a.timestamp, a.frame) == (7, 0, 12.5, None)
    assert a.path == tmp_path / "cams" / "cam1" / "a.jpg"
    d = record_named(dataset, "query", "d.jpg")
    assert (d.pid, d.camid, d.timestamp) == (7, 1, 14.25)
    assert [r.path.name for r in dataset.gallery] == ["e.jpg"]


def test_folder_empty_pid_means_unlabeled(tmp_path):
    manifest = make_folder(tmp_path / "cams", FOLDER_MANIFEST, FOLDER_IMAGES)
    dataset = load_dataset(f"folder:{manifest}")
    unlabeled = record_named(dataset, "train", "c.jpg")
    assert unlabeled.pid is None and not unlabeled.is_labeled
    assert dataset.summaries()[0].unlabeled == 1


def test_folder_camid_is_used_as_given_and_distractors_leave_train(tmp_path):
    manifest = make_folder(tmp_path / "cams", FOLDER_MANIFEST, FOLDER_IMAGES)
    dataset = load_dataset(f"folder:{manifest}")
    assert [r.camid for r in dataset.train] == [0, 1]
    assert dataset.dropped == {"train: distractor (pid 0)": 1}


def test_folder_spec_may_name_the_directory_holding_manifest_csv(tmp_path):
    make_folder(tmp_path / "cams", FOLDER_MANIFEST, FOLDER_IMAGES)
    assert len(load_dataset(f"folder:{tmp_path / 'cams'}").train) == 2


def test_folder_manifest_with_only_required_columns_defaults_to_train(tmp_path):
    manifest = make_folder(tmp_path, "path,pid,camid\nx.png,3,4\n", ["x.png"])
    dataset = load_dataset(f"folder:{manifest}")
    assert [(r.pid, r.camid, r.timestamp) for r in dataset.train] == [(3, 4, None)]
    assert not dataset.query and not dataset.gallery


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("cam1/a.jpg,7,first,1.0,train", r"camid 'first' is not an integer"),
        ("cam1/a.jpg,7,-2,1.0,train", r"camid -2 is out of range"),
        ("cam1/a.jpg,seven,0,1.0,train", r"pid 'seven' is not an integer"),
        ("cam1/a.jpg,7,0,noon,train", r"timestamp 'noon'"),
        ("cam1/a.jpg,7,0,1.0,test", r"unknown split 'test'; expected one of train, query, gallery"),
        ("cam1/zzz.jpg,7,0,1.0,train", r"image file not found: .*zzz\.jpg"),
        ("cam1/a.jpg,7,0", r"expected 5 fields"),
        ("cam1/a.jpg,7,,1.0,train", r"empty camid"),
    ],
)
def test_folder_bad_row_names_the_manifest_and_line_number(tmp_path, row, problem):
    manifest = make_folder(
        tmp_path, FOLDER_MANIFEST.replace("cam1/b.jpg,0,0,13,", row), FOLDER_IMAGES
    )
    with pytest.raises(DatasetError, match=rf"manifest\.csv:4: {problem}"):
        load_dataset(f"folder:{manifest}")


def test_folder_header_missing_a_required_column_is_an_error(tmp_path):
    manifest = make_folder(tmp_path, "path,pid\na.jpg,1\n", ["a.jpg"])
    with pytest.raises(DatasetError, match=r"manifest\.csv:1: header is missing column\(s\) camid"):
        load_dataset(f"folder:{manifest}")


def test_folder_unknown_column_is_an_error_not_silently_ignored(tmp_path):
    manifest = make_folder(tmp_path, "path,pid,camid,timestmp\na.jpg,1,0,3\n", ["a.jpg"])
    with pytest.raises(DatasetError, match=r"unknown column.*'timestmp'"):
        load_dataset(f"folder:{manifest}")


def test_folder_without_manifest_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"manifest\.csv: not found"):
        load_dataset(f"folder:{tmp_path}")


# ------------------------------------------------------------------------- synthetic


def make_synthetic(root: Path, meta: object) -> Path:
    make_market_layout(root, MARKET_NAMES)
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_synthetic_reads_the_market_layout_under_its_own_name(tmp_path):
    root = make_synthetic(tmp_path / "syn", {"generator": "reid.data.synthetic", "seed": 0})
    dataset = load_dataset(f"synthetic:{root}")
    assert dataset.name == "synthetic"
    assert [s.images for s in dataset.summaries()] == [4, 2, 4]


def test_synthetic_without_meta_json_tells_how_to_generate_it(tmp_path):
    root = make_market_layout(tmp_path / "syn", MARKET_NAMES)
    with pytest.raises(
        DatasetError, match=r"meta\.json: not found.*python -m reid\.data\.synthetic"
    ):
        load_dataset(f"synthetic:{root}")


def test_synthetic_meta_json_from_another_generator_is_refused(tmp_path):
    root = make_synthetic(tmp_path / "syn", {"generator": "something-else"})
    with pytest.raises(DatasetError, match=r"expected \"generator\": \"reid\.data\.synthetic\""):
        load_dataset(f"synthetic:{root}")


# ------------------------------------------------------------------------------- CLI


def test_cli_summary_prints_the_table(market, capsys):
    assert cli_main(["summary", f"market1501:{market}"]) == 0
    out = capsys.readouterr().out
    assert "Dataset market1501" in out and "# distractors" in out


def test_cli_summary_json(market, capsys):
    assert cli_main(["summary", "--json", f"market1501:{market}"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["name"] == "market1501"
    assert [s["images"] for s in payload["splits"]] == [4, 2, 4]
    assert payload["dropped"]["train: junk (pid -1)"] == 1


def test_cli_bad_spec_exits_non_zero_with_the_message_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reid.data", "summary", f"market1501:{tmp_path / 'nowhere'}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unknown_format_lists_formats(capsys):
    assert cli_main(["summary", "cuhk03:/x"]) == 1
    assert "market1501" in capsys.readouterr().err
