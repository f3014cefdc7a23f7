"""Training-set exports (``python -m civitai_spider.export``) of a real crawl's store, local and
s3, loaded back with the libraries trainers use: pyarrow/pandas, webdataset and datasets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from PIL import Image

from civitai_spider.export.run import export
from civitai_spider.export.samples import COLUMNS, SampleOptions
from civitai_spider.export.source import LocalSource
from civitai_spider.export.webdataset import WebDatasetWriter, member
from tests.support import REPO, api_image, image_bytes, run_crawl, run_in_terminal, scenario

# datasets reads these when it is imported: no hub, its cache in the test's folder (each load passes cache_dir).
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FILES = {
    "jpeg": image_bytes("JPEG", size=(64, 48)),
    "png": image_bytes("PNG", size=(48, 64)),
    "webp": image_bytes("WEBP", size=(80, 40), lossless=True),
    "mp4": b"\x00\x00\x00\x14ftypisom\x00\x00\x00\x00isom" + b"\x00\x00\x00\x10moov" + bytes(8) + bytes(64),
}
SIZES = {"jpeg": (64, 48), "png": (48, 64), "webp": (80, 40)}
KINDS = ("jpeg", "png", "webp")
EXTS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
IMAGES = 24  # ids 1..24, plus video 25


def prompt_of(image_id: int) -> str:
    return f"<lora:detailer_v2:0.8> a lighthouse number {image_id}, watercolor" if image_id % 3 == 0 \
        else f"a castle on a hill {image_id}, 8k"


def harvest() -> dict[str, Any]:
    """24 images in the three formats Civitai serves (stored as they came), their reactions
    varied, one video; image 7 has no meta (so no prompt)."""
    images = []
    for i in range(1, IMAGES + 1):
        meta: Any = {"prompt": prompt_of(i), "negativePrompt": f"blurry {i}", "seed": 1000 + i, "steps": 30}
        if i == 7:
            meta = None
        images.append(api_image(i, hearts=i, likes=2 * i, laughs=i % 4, cries=i % 2, comments=i % 5,
                                dislikes=i % 3, meta=meta, file=KINDS[i % 3], username=f"user{i % 4}",
                                baseModel="Pony" if i % 2 else "SDXL 1.0"))
    images.append(api_image(IMAGES + 1, file="mp4"))  # served as an image, stored as what it is: N.mp4
    return scenario(images, FILES)


async def crawl_store(server: Any, store: str, settings: dict[str, Any] | None = None) -> list[int]:
    server.load(harvest())
    result = await run_crawl(server, {"IMAGES_STORE": store, **(settings or {})}, require_meta="false")
    assert sorted(result.ids) == list(range(1, IMAGES + 2))  # every image and the video stored
    return sorted(result.ids)


def run_export(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m civitai_spider.export ...`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "civitai_spider.export", *map(str, args)], cwd=REPO,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def exported(*args: Any) -> subprocess.CompletedProcess[str]:
    done = run_export(*args)
    assert done.returncode == 0, done.stderr
    assert "error:" not in done.stderr, done.stderr
    return done


def s3_args(s3: Any) -> list[str]:
    return [arg for name, value in s3.settings.items() for arg in ("-s", f"{name}={value}")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def expected_row(image_id: int) -> dict[str, Any]:
    kind = KINDS[image_id % 3]
    prompt = None if image_id == 7 else prompt_of(image_id)
    return {"id": image_id, "file": f"{image_id}.{EXTS[kind]}", "prompt": prompt,
            "hearts": image_id, "likes": 2 * image_id, "laughs": image_id % 4, "cries": image_id % 2,
            "comments": image_id % 5, "dislikes": image_id % 3, "username": f"user{image_id % 4}",
            "base_model": "Pony" if image_id % 2 else "SDXL 1.0", "format": EXTS[kind],
            "width": SIZES[kind][0], "height": SIZES[kind][1], "md5": hashlib.md5(FILES[kind]).hexdigest(),
            "bytes": len(FILES[kind]), "has_record": True}


def png_store(folder: Path, count: int, side: int) -> Path:
    """A store of ``count`` PNGs of side x side pixels and nothing else (no records): slow to resize."""
    folder.mkdir()
    data = image_bytes("PNG", size=(side, side))
    for i in range(1, count + 1):
        (folder / f"{i}.png").write_bytes(data)
    return folder


def clean(prompt: str | None) -> str | None:
    return None if prompt is None else prompt.replace("<lora:detailer_v2:0.8> ", "")


# --- the three formats, each loaded by its libraries -------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest_twisted.ensureDeferred
async def test_the_three_exports_load_in_their_libraries(server, tmp_path, s3, where):
    import datasets
    import duckdb
    import pandas as pd
    import pyarrow.parquet as pq
    import webdataset as wds

    store = str(tmp_path / "store") if where == "local" else s3.new_store()
    await crawl_store(server, store, s3.settings if where == "s3" else None)
    extra = s3_args(s3) if where == "s3" else []
    out = tmp_path / "out"
    out.mkdir()
    cache = str(tmp_path / "hf")
    ids = list(range(1, IMAGES + 1))  # the video is left out unless --videos

    # parquet: pyarrow's schema, pandas' rows, and datasets
    done = exported("parquet", store, out / "h.parquet", *extra)
    assert done.stdout.strip() == str(out / "h.parquet")
    assert f"exported {IMAGES} of {IMAGES + 1} images" in done.stderr and "video 1" in done.stderr
    table = pq.read_table(out / "h.parquet")
    assert table.schema.names == list(COLUMNS) and str(table.schema.field("hearts").type) == "int64"
    frame = pd.read_parquet(out / "h.parquet")
    assert frame["id"].tolist() == ids
    for row in frame.to_dict("records"):
        row = {k: None if pd.isna(v) else v for k, v in row.items()}  # pandas' null is NaN
        want = expected_row(row["id"])
        assert {k: row[k] for k in want} == want
        assert row["caption"] == clean(want["prompt"])
        assert (json.loads(row["meta"])["seed"] if row["meta"] else None) == (None if row["id"] == 7 else 1000 + row["id"])
        assert row["negative_prompt"] == (None if row["id"] == 7 else f"blurry {row['id']}")
        assert row["created_at"] == "2024-04-04T21:24:07.499Z" and row["browsing_level"] == 1
        assert row["url"].endswith(".jpeg") and row["post_id"] == 1000 + row["id"]
    counted = duckdb.sql(f"SELECT count(*), sum(hearts), max(username) FROM '{out / 'h.parquet'}'").fetchall()[0]
    assert counted == (IMAGES, sum(ids), "user3")
    hf = datasets.load_dataset("parquet", data_files=str(out / "h.parquet"), split="train", cache_dir=cache)
    assert hf["id"] == ids and hf["hearts"] == ids and hf["prompt"][2] == prompt_of(3)

    # webdataset: the webdataset library, and datasets (its card names every part)
    exported("webdataset", store, out / "wds", "--shard-size", 10, *extra)
    shards = sorted((out / "wds").glob("*.tar"))
    assert [s.name for s in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames()[:6] == ["1.png", "1.txt", "1.json", "2.webp", "2.txt", "2.json"]
    seen = []
    for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False).decode("pil"):
        image_id = int(sample["__key__"])
        want = expected_row(image_id)
        image = sample[want["format"]]
        assert image.size == (want["width"], want["height"])
        assert sample["txt"] == (clean(want["prompt"]) or "")
        assert {k: sample["json"][k] for k in want} == want
        seen.append(image_id)
    assert seen == ids
    hf = datasets.load_dataset(str(out / "wds"), split="train", cache_dir=cache)
    assert len(hf) == IMAGES and sorted(hf.column_names) == ["jpg", "json", "png", "txt", "webp"]
    row = hf[2]  # id 3: a jpg, nothing in the other image columns
    assert row["jpg"].size == SIZES["jpeg"] and row["png"] is None and row["json"]["hearts"] == 3
    assert [r["id"] for r in hf["json"]] == ids
    features = datasets.load_dataset_builder(str(out / "wds"), cache_dir=cache).info.features
    hf = datasets.load_dataset("webdataset", data_files=[str(s) for s in shards], features=features,
                               split="train", cache_dir=cache)
    assert [r["hearts"] for r in hf["json"]] == ids and hf[0]["png"].size == SIZES["png"]

    # imagefolder: datasets' imagefolder, every image with its columns
    done = exported("imagefolder", store, out / "folder", *extra)
    assert ("24 linked, 0 copied" if where == "local" else "0 linked, 24 copied") in done.stderr
    lines = (out / "folder" / "metadata.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["file_name"] for line in lines] == [expected_row(i)["file"] for i in ids]
    hf = datasets.load_dataset("imagefolder", data_dir=str(out / "folder"), split="train", cache_dir=cache)
    assert sorted(hf["id"]) == ids
    for row in hf:
        want = expected_row(row["id"])
        assert row["image"].size == (want["width"], want["height"])
        assert {k: row[k] for k in want} == want
    if where == "local":  # hard links to the store's files: no second copy of the images
        assert all(os.path.samefile(out / "folder" / f"{i}.{expected_row(i)['format']}",
                                    tmp_path / "store" / f"{i}.{expected_row(i)['format']}") for i in ids)
    assert leftovers(out) == []


@pytest_twisted.ensureDeferred
async def test_videos_only_when_asked(server, tmp_path):
    store = tmp_path / "store"
    await crawl_store(server, str(store))
    exported("webdataset", store, tmp_path / "wds", "--videos")
    with tarfile.open(tmp_path / "wds" / "00000.tar") as tar:
        names = tar.getnames()
        assert f"{IMAGES + 1}.mp4" in names and tar.extractfile(f"{IMAGES + 1}.mp4").read() == FILES["mp4"]
    assert len(names) == 3 * (IMAGES + 1)


def test_tar_members_are_what_tarfile_writes():
    for name, data in (("123.jpg", b"x" * 1000), ("9.json", b""), ("12345678901.webp", b"y" * 513)):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
        ours = member(name, data, 1_700_000_000)
        assert ours[:512] == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        assert len(ours) % 512 == 0 and ours[512:512 + len(data)] == data
    long = "9" * 120 + ".png"  # too long for a USTAR name: tarfile's PAX header
    with tarfile.open(fileobj=io.BytesIO(member(long, b"abc", 0) + bytes(1024))) as tar:
        assert tar.getnames() == [long] and tar.extractfile(long).read() == b"abc"


# --- options: captions, thresholds, resizing ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_captions_and_thresholds(server, tmp_path):
    import pandas as pd

    store = tmp_path / "store"
    await crawl_store(server, str(store))
    for caption, expect in (("clean", clean), ("prompt", lambda p: p), ("none", lambda p: None)):
        exported("parquet", store, tmp_path / f"{caption}.parquet", "--caption", caption)
        frame = pd.read_parquet(tmp_path / f"{caption}.parquet")
        got = [None if pd.isna(c) else c for c in frame["caption"]]
        assert got == [expect(expected_row(i)["prompt"]) for i in range(1, IMAGES + 1)]
        assert frame["prompt"].tolist()[2] == prompt_of(3)  # the prompt column stays as given

    done = exported("parquet", store, tmp_path / "best.parquet", "--min-hearts", 10, "--max-dislikes", 1)
    frame = pd.read_parquet(tmp_path / "best.parquet")
    want = [i for i in range(10, IMAGES + 1) if i % 3 <= 1]
    assert frame["id"].tolist() == want
    assert f"exported {len(want)} of {IMAGES + 1}" in done.stderr and "filtered/min_hearts 9" in done.stderr


@pytest.mark.parametrize(("mode", "sizes"), [
    ("keep_ratio", {"jpeg": (43, 32), "png": (32, 43), "webp": (64, 32)}),
    ("center_crop", {"jpeg": (32, 32), "png": (32, 32), "webp": (32, 32)}),
    ("border", {"jpeg": (32, 32), "png": (32, 32), "webp": (32, 32)}),
])
@pytest_twisted.ensureDeferred
async def test_resize_at_export_time_leaves_the_store_as_it_is(server, tmp_path, mode, sizes):
    import datasets

    store = tmp_path / "store"
    await crawl_store(server, str(store))
    before = {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()}
    exported("webdataset", store, tmp_path / "wds", "--resize", 32, "--resize-mode", mode)
    with tarfile.open(tmp_path / "wds" / "00000.tar") as tar:
        for i in range(1, IMAGES + 1):
            want = expected_row(i)
            data = tar.extractfile(f"{i}.{want['format']}").read()
            with Image.open(io.BytesIO(data)) as image:
                assert image.format.lower().replace("jpeg", "jpg") == want["format"]  # the format stays
                assert image.size == sizes[KINDS[i % 3]]
                if mode == "border" and KINDS[i % 3] == "webp":  # 80x40 -> 32x16 in a white square
                    assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)
            record = json.loads(tar.extractfile(f"{i}.json").read())
            assert (record["width"], record["height"]) == sizes[KINDS[i % 3]]
    assert {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()} == before  # lossless store

    exported("parquet", store, tmp_path / "emb.parquet", "--embed-images", "--resize", 32, "--resize-mode", mode)
    hf = datasets.load_dataset("parquet", data_files=str(tmp_path / "emb.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert [row["image"].size for row in hf] == [sizes[KINDS[i % 3]] for i in range(1, IMAGES + 1)]


@pytest_twisted.ensureDeferred
async def test_resize_only_if_bigger_keeps_small_images_byte_for_byte(server, tmp_path):
    store = tmp_path / "store"
    await crawl_store(server, str(store))
    exported("imagefolder", store, tmp_path / "folder", "--resize", 60, "--resize-only-if-bigger")
    for i in range(1, IMAGES + 1):
        want = expected_row(i)
        data = (tmp_path / "folder" / want["file"]).read_bytes()
        if KINDS[i % 3] == "webp":  # 80x40: its smaller side 40 is under 60 too
            assert data == FILES["webp"]
        else:
            assert data == FILES[KINDS[i % 3]]


def test_progress_on_a_terminal_then_the_closing_line(tmp_path):
    store = png_store(tmp_path / "store", 300, 512)
    status, screen = run_in_terminal(["imagefolder", str(store), str(tmp_path / "folder"), "--resize", "500",
                                      "--workers", "1"], module="civitai_spider.export")
    assert status == 0, screen
    bars = [part for part in screen.split("\r") if "img/s" in part or "it/s" in part]
    assert len(bars) >= 2 and "/300" in bars[-1]  # a bar redrawn in place while it runs
    assert "exported 300 of 300 images" in screen and "300 without their record N.json" in screen


# --- stores written before records, and stores with problems -------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_store_without_records_exports_what_its_files_say(server, tmp_path):
    import pandas as pd

    store = tmp_path / "store"
    await crawl_store(server, str(store))
    for i in (3, 4):  # as an older version stored them: no N.json
        (store / f"{i}.json").unlink()
    done = exported("parquet", store, tmp_path / "h.parquet")
    assert "2 without their record N.json" in done.stderr
    frame = pd.read_parquet(tmp_path / "h.parquet").set_index("id")
    assert len(frame) == IMAGES
    assert not frame.loc[3, "has_record"] and frame.loc[5, "has_record"]
    assert frame.loc[3, "prompt"] == prompt_of(3) and frame.loc[4, "negative_prompt"] == "blurry 4"  # N_meta.json
    assert pd.isna(frame.loc[3, "hearts"]) and frame.loc[5, "hearts"] == 5
    assert (frame.loc[3, "width"], frame.loc[3, "height"]) == SIZES["jpeg"]  # read from the image
    done = exported("parquet", store, tmp_path / "liked.parquet", "--min-likes", 1)
    assert "filtered/reactions_unknown 2" in done.stderr  # a threshold cannot be checked without the record
    assert 3 not in pd.read_parquet(tmp_path / "liked.parquet")["id"].tolist()


@pytest_twisted.ensureDeferred
async def test_problems_in_the_store_are_warned_counted_and_lose_nothing_else(server, tmp_path):
    import pandas as pd

    store = tmp_path / "store"
    await crawl_store(server, str(store))
    (store / "5.json").write_text("{cut sho", "utf-8")
    (store / "6.jpg").unlink()  # its record stays: an image deleted by hand
    (store / "8.webp").write_bytes(FILES["webp"][:40])  # cut after it was stored
    (store / "11.webp").write_bytes(image_bytes("PNG", size=(80, 40)))  # replaced by another file
    (store / "99.png").mkdir()  # not a file
    for name in ("3.JPG", "007.jpg", "123456789012345678.png"):  # names a crawl never writes
        (store / name).write_bytes(FILES["png"])
    done = exported("webdataset", store, tmp_path / "wds")
    assert "skipped: record_unreadable: 5.json" in done.stderr
    assert "skipped: image_changed: 8.webp: not the file that was stored" in done.stderr
    assert "skipped: image_changed: 11.webp" in done.stderr
    assert "skipped: file_unreadable: 99.png" in done.stderr
    assert "3 files not exported: not named as a crawl names them" in done.stderr and "3.JPG" in done.stderr
    assert "1 records N.json without their image" in done.stderr
    assert "4 images skipped for a problem of the store" in done.stderr
    with tarfile.open(tmp_path / "wds" / "00000.tar") as tar:
        ids = sorted({int(name.split(".")[0]) for name in tar.getnames()})
    assert ids == [i for i in range(1, IMAGES + 1) if i not in (5, 6, 8, 11)]

    # imagefolder's hard links: a store file that is a symbolic link is linked where it points
    (tmp_path / "elsewhere").mkdir()
    os.rename(store / "9.jpg", tmp_path / "elsewhere" / "9.jpg")
    os.symlink(tmp_path / "elsewhere" / "9.jpg", store / "9.jpg")
    (store / "12.jpg").unlink()
    os.symlink(tmp_path / "elsewhere" / "gone.jpg", store / "12.jpg")  # dangling
    done = exported("imagefolder", store, tmp_path / "folder")
    assert "skipped: image_missing: 12.jpg: not found" in done.stderr
    linked = tmp_path / "folder" / "9.jpg"
    assert not linked.is_symlink() and os.path.samefile(linked, tmp_path / "elsewhere" / "9.jpg")
    frame = pd.read_json(tmp_path / "folder" / "metadata.jsonl", lines=True)
    assert 12 not in frame["id"].tolist() and 9 in frame["id"].tolist()


@pytest_twisted.ensureDeferred
async def test_odd_records_keep_what_they_say(server, tmp_path):
    """Records as an API may send them: a meta that is a list, counters null or strings, a lone
    surrogate in a prompt (a cut emoji), ids as strings. Nothing crashes; nothing is invented."""
    import pandas as pd

    store = tmp_path / "store"
    await crawl_store(server, str(store))
    record = json.loads((store / "1.json").read_text("utf-8"))
    record.update(meta=[{"prompt": "in a list"}], postId="1001", browsingLevel=2**70,
                  stats={"heartCount": "12", "likeCount": None, "laughCount": "lots", "cryCount": 2.0})
    (store / "1.json").write_text(json.dumps(record), "utf-8")
    record = json.loads((store / "2.json").read_text("utf-8"))
    (store / "2.json").write_text(json.dumps(record).replace("a castle", "a castle \\ud83d"), "utf-8")
    for fmt, out in (("parquet", "h.parquet"), ("webdataset", "wds"), ("imagefolder", "folder")):
        exported(fmt, store, tmp_path / out)
    frame = pd.read_parquet(tmp_path / "h.parquet").set_index("id")
    first = {k: None if not isinstance(v, str) and pd.isna(v) else v for k, v in frame.loc[1].items()}
    assert json.loads(first["meta"]) == [{"prompt": "in a list"}] and first["prompt"] is None
    assert (first["hearts"], first["likes"], first["laughs"], first["cries"]) == (12, None, None, 2)
    assert first["post_id"] == 1001 and first["browsing_level"] is None  # too large for a 64-bit column
    assert frame.loc[2, "prompt"].startswith("a castle \ufffd")


# --- errors: one line, exit 2, nothing written ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_bad_stores_and_options_are_one_error_line_and_exit_2(server, tmp_path, s3):
    store = tmp_path / "store"
    await crawl_store(server, str(store))
    (tmp_path / "taken").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "broken" / "1.png").mkdir(parents=True)  # its only image cannot be read
    cases = [
        (["parquet", tmp_path / "nowhere", tmp_path / "o.parquet"], "store not found"),
        (["parquet", tmp_path / "a-file", tmp_path / "o.parquet"], "not a folder"),
        (["parquet", tmp_path / "empty", tmp_path / "o.parquet"], "holds no image"),
        (["webdataset", tmp_path / "broken", tmp_path / "o"], "nothing exported: every image"),
        (["webdataset", "ftp://host/x", tmp_path / "o"], "ftp://"),
        (["webdataset", store, tmp_path / "taken"], "exists: an export never overwrites"),
        (["webdataset", store, tmp_path / "no" / "o"], "folder not found"),
        (["webdataset", store, "."], "OUT must name a new file or folder"),
        (["webdataset", store, "/proc/o"], "cannot write in /proc"),
        (["parquet", store, tmp_path / "o.parquet", "--resize", "64"], "--resize with parquet needs --embed-images"),
        (["webdataset", store, tmp_path / "o", "--embed-images"], "--embed-images is for parquet"),
        (["webdataset", store, tmp_path / "o", "--shard-size", "0"], "must be at least 1"),
        (["webdataset", store, tmp_path / "o", "--resize", "64", "--quality", "101"], "must be at most 100"),
        (["tfrecord", store, tmp_path / "o"], "invalid choice"),
        (["parquet", "s3://no-such-bucket/x/", tmp_path / "o.parquet", *s3_args(s3)], "cannot list s3://no-such-bucket/x/"),
    ]
    for args, message in cases:
        done = run_export(*args)
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert done.returncode == 2 and len(errors) == 1 and message in errors[0], (args, done.stderr)
        assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "broken", "empty", "store", "taken"]
    assert list((tmp_path / "taken").iterdir()) == []


def test_an_export_that_fails_part_way_leaves_nothing_under_its_name(tmp_path):
    store = png_store(tmp_path / "store", 30, 48)

    class DiskFull(WebDatasetWriter):  # the real writer, until the disk fills
        def write(self, sample):
            if self.samples == 25:
                raise OSError(28, "No space left on device")
            super().write(sample)

    out = tmp_path / "wds"
    with pytest.raises(OSError, match="No space left"):
        export(LocalSource(str(store)), DiskFull(out, shard_size=10), SampleOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no OUT, no temporary


def test_ctrl_c_leaves_nothing_under_its_name(tmp_path):
    """A real Ctrl-C (SIGINT) in the middle of a slow export: exit 130, nothing written."""
    import signal
    import time

    store = png_store(tmp_path / "store", 200, 1024)
    process = subprocess.Popen([sys.executable, "-m", "civitai_spider.export", "webdataset", str(store),
                                str(tmp_path / "wds"), "--resize", "1000", "--workers", "1"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".part") for p in tmp_path.iterdir()):  # started writing
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: nothing written to" in stderr and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
