"""The metadata pipeline: prompt and meta files beside each stored image, through real crawls."""

from __future__ import annotations

import hashlib
import json

import pytest
import pytest_twisted

from civitai_spider.storage.metadata_files import caption
from tests.support import api_image, image_bytes, run_crawl, scenario

PROMPTS = {
    1: "a lighthouse at dusk",
    2: "a cat 🐱 in space 🚀, 8k",
    3: "山の上の城、夕焼け、高精細",
    4: "line one\nline two\r\n\n  indented line three  \n",
}
FILES = {"jpeg": image_bytes("JPEG")}


def meta_for(image_id: int) -> dict:
    return {
        "prompt": PROMPTS[image_id],
        "negativePrompt": "ugly, 低品質" if image_id != 2 else "",
        "seed": 1938345220, "steps": "45", "cfgScale": 5, "Clip skip": 2,
        "Model": {"name": "sdxl", "hash": "abc"}, "resources": [], "hashes": {"model": "abc"},
        "civitaiResources": [{"type": "checkpoint", "modelVersionId": 345685}],
    }


@pytest_twisted.ensureDeferred
async def test_metadata_files_are_exact(server, tmp_path):
    images = [api_image(i, meta=meta_for(i), file="jpeg") for i in PROMPTS]
    images.append(api_image(5, meta={"negativePrompt": "no prompt here", "seed": 1}, file="jpeg"))
    images.append(api_image(6, meta=None, file="jpeg"))
    server.load(scenario(images, FILES))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path)}, require_meta="false")

    assert sorted(result.ids) == [1, 2, 3, 4, 5, 6]
    for image_id, prompt in PROMPTS.items():
        assert (tmp_path / f"{image_id}_pos-prompt.txt").read_bytes() == prompt.encode("utf-8")
        meta = json.loads((tmp_path / f"{image_id}_meta.json").read_text("utf-8"))
        assert meta == meta_for(image_id)  # round-trips to the API's dict, types and all
    assert "低品質" in (tmp_path / "3_meta.json").read_text("utf-8")  # not \\u-escaped
    assert (tmp_path / "1_neg-prompt.txt").read_text("utf-8") == "ugly, 低品質"
    assert not (tmp_path / "2_neg-prompt.txt").exists()  # empty negative prompt: no file
    assert not (tmp_path / "5_pos-prompt.txt").exists()  # no prompt: no file
    assert (tmp_path / "5_neg-prompt.txt").read_text("utf-8") == "no prompt here"
    assert sorted(p.name for p in tmp_path.glob("6*")) == ["6.jpg", "6.json"]  # meta null: image and record
    assert not list(tmp_path.glob("*.txt")) or all("_" in p.name for p in tmp_path.glob("*.txt"))
    written = [p for p in tmp_path.iterdir()
               if p.name.endswith(("_pos-prompt.txt", "_neg-prompt.txt", "_meta.json")) or p.name[:-5].isdigit()]
    assert result.stats["metadata/files_written"] == len(written)
    assert result.stats["metadata/bytes_written"] == sum(p.stat().st_size for p in written)


@pytest_twisted.ensureDeferred
async def test_nested_meta_is_written_flat(server, tmp_path):
    server.load(scenario([api_image(1, meta=meta_for(1), file="jpeg")], FILES, nested_meta=True))

    await run_crawl(server, {"IMAGES_STORE": str(tmp_path)})

    assert json.loads((tmp_path / "1_meta.json").read_text("utf-8")) == meta_for(1)


@pytest_twisted.ensureDeferred
async def test_caption_files_when_asked(server, tmp_path):
    prompt = "<lora:detail:0.8>, a castle, <LoRA:style_v2:1>, sunset, <lyco:x:0.5>"
    server.load(scenario([api_image(1, prompt=prompt, file="jpeg")], FILES))

    await run_crawl(server, {"IMAGES_STORE": str(tmp_path), "CIVITAI_CAPTION_FILES": True})

    assert (tmp_path / "1.txt").read_text("utf-8") == "a castle, sunset"
    assert (tmp_path / "1_pos-prompt.txt").read_text("utf-8") == prompt


def test_caption_keeps_lines_and_plain_prompts():
    assert caption("a dog") == "a dog"
    assert caption("a dog,  <lora:x:1>\nsecond line") == "a dog,\nsecond line"


@pytest_twisted.ensureDeferred
async def test_items_export_with_stored_paths(server, tmp_path):
    server.load(scenario([api_image(1, meta=meta_for(1), file="jpeg")], FILES))
    feed = tmp_path / "images.jsonl"

    await run_crawl(server, {"IMAGES_STORE": str(tmp_path / "store"), "FEEDS": {str(feed): {"format": "jsonlines"}}})

    exported = json.loads(feed.read_text("utf-8"))
    assert exported["id"] == 1 and exported["stats"]["heartCount"] == 0
    assert exported["meta"] == meta_for(1)
    assert exported["images"][0]["path"] == "1.jpg"


# Built and written by a store process (the default with a local store), or in the crawl's process.
@pytest.mark.parametrize("processes", [2, 0])
@pytest_twisted.ensureDeferred
async def test_metadata_over_the_size_cap_is_not_written_and_not_done(server, tmp_path, processes):
    big = {"prompt": "a long one " * 400, "seed": 2}  # ~8.8 kB of files
    images = [api_image(1, meta=meta_for(1), file="jpeg"), api_image(2, meta=big, file="jpeg")]
    server.load(scenario(images, FILES))

    result = await run_crawl(server, {"IMAGES_STORE": str(tmp_path), "CIVITAI_META_MAX_BYTES": 4096,
                                      "CIVITAI_STORE_PROCESSES": processes})

    assert result.ids == [1]
    assert result.stats["metadata/too_large"] == 1
    assert not list(tmp_path.glob("2_*")) and not (tmp_path / "2.json").exists()  # none of its metadata files
    assert (tmp_path / "downloaded_ids.txt").read_text().split() == ["1"]  # so the next run tries it again
    assert json.loads((tmp_path / "1_meta.json").read_text())["seed"] == 1938345220
    assert result.stats["metadata/files_written"] == 4  # prompts, meta and the record


# The record, written by a store process (a local store's default), in the crawl's process, and to s3.
@pytest.mark.parametrize("where", ["processes", "threads", "s3"])
@pytest_twisted.ensureDeferred
async def test_every_stored_image_has_its_record(server, tmp_path, s3, where):
    png = image_bytes("PNG")
    gif = image_bytes("GIF", mode="P")
    images = [api_image(1, meta=meta_for(1), hearts=12, likes=3, file="jpeg", baseModelType="Standard",
                        remixOfId=77, username="山田"),
              api_image(2, meta=None, file="png"), api_image(3, file="gif")]
    server.load(scenario(images, {**FILES, "png": png, "gif": gif}))
    settings = {"IMAGES_STORE": str(tmp_path), "CIVITAI_STORE_PROCESSES": 2 if where == "processes" else 0}
    if where == "s3":
        settings = {**s3.settings, "IMAGES_STORE": s3.new_store()}

    result = await run_crawl(server, settings, require_meta="false")

    assert sorted(result.ids) == [1, 2, 3]
    if where == "s3":
        objects = s3.objects(settings["IMAGES_STORE"])
        records = {i: json.loads(objects[f"{i}.json"]["body"]) for i in (1, 2, 3)}
        files = {i: objects[records[i]["stored"]["file"]]["body"] for i in (1, 2, 3)}
    else:
        records = {i: json.loads((tmp_path / f"{i}.json").read_text("utf-8")) for i in (1, 2, 3)}
        files = {i: (tmp_path / records[i]["stored"]["file"]).read_bytes() for i in (1, 2, 3)}
    first = records[1]
    assert first["id"] == 1 and first["username"] == "山田" and first["meta"] == meta_for(1)
    assert first["stats"]["heartCount"] == 12 and first["stats"]["likeCount"] == 3
    assert first["baseModel"] == "SDXL 1.0" and first["createdAt"] == "2024-04-04T21:24:07.499Z"
    assert first["browsingLevel"] == 1 and first["postId"] == 1001 and first["url"].endswith(".jpeg")
    assert first["remixOfId"] == 77  # a field this version does not know, kept as given
    assert first["query"] == "all"
    stored = first["stored"]
    assert stored["file"] == "1.jpg" and stored["format"] == "jpg" and stored["kept"] is True
    assert stored["source_format"] == "JPEG" and stored["bytes"] == len(files[1]) == len(FILES["jpeg"])
    assert stored["md5"] == hashlib.md5(files[1]).hexdigest()
    assert (stored["width"], stored["height"]) == (64, 48)
    assert records[2]["meta"] is None and records[2]["stored"]["file"] == "2.png"
    assert records[3]["stored"]["kept"] is False and records[3]["stored"]["source_format"] == "GIF"
    assert records[3]["stored"]["md5"] == hashlib.md5(files[3]).hexdigest()
    assert all(r["stored"]["at"].endswith("+00:00") for r in records.values())
