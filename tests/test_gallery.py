"""The static gallery page (civitai_spider.gallery): generation, safety, scale, and a real browser."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import pytest_twisted
from PIL import Image, ImageDraw

from civitai_spider import gallery

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DATA_OPEN = '<script id="gallery-data" type="application/json">'

XSS_PROMPT = '<script>alert(1)</script><img src=x onerror="window.__pwned=1"> castle at dusk, <lora:x:1>'
FOX_PROMPT = "a red fox in fresh snow, golden hour, <lora:x:1>, masterpiece"
UNICODE_PROMPT = "замок на горе · café & crème brûlée · ηλιοβασίλεμα"


# --- building harvest folders --------------------------------------------------------


def art(seed: int, size: tuple[int, int]) -> Image.Image:
    """A small abstract picture (gradient sky, sun, hills) so screenshots look like a gallery."""
    w, h = size
    palettes = [
        ((32, 42, 94), (244, 143, 92)), ((12, 60, 70), (160, 220, 190)), ((60, 20, 70), (250, 190, 120)),
        ((20, 24, 40), (110, 140, 230)), ((80, 30, 30), (250, 220, 150)), ((10, 50, 40), (230, 240, 170)),
    ]
    top, bottom = palettes[seed % len(palettes)]
    ramp = Image.linear_gradient("L").resize((w, h))
    im = Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), ramp)
    draw = ImageDraw.Draw(im)
    r = w // 7 + (seed * 13) % (w // 8)
    cx, cy = w * (2 + seed % 5) // 8, h * (2 + seed % 3) // 9
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 236, 200))
    for layer in range(3):
        shade = tuple(max(0, c // (2 + layer)) for c in top)
        base = h * (6 + layer) // 10
        wave = [
            (x, base - int(h / 12 * math.sin((x / w) * (3 + layer + seed % 3) + seed + layer)))
            for x in range(0, w + 16, 16)
        ]
        points = [(0, h), *wave, (w, h)]
        draw.polygon(points, fill=shade)
    return im


def save(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=85) if path.suffix == ".jpg" else im.save(path)


def item(image_id: int, *, hearts: int = 0, likes: int = 0, comments: int = 0, size: tuple[int, int] = (0, 0),
         user: str = "", base: str = "SDXL 1.0", created: str = "", meta: dict | None = None) -> dict[str, Any]:
    """A feed-export line as ``scrapy crawl civitai -O items.jsonl`` writes it."""
    ext = "png"
    return {
        "id": image_id, "url": f"https://image.civitai.com/x/{image_id}.jpeg", "width": size[0], "height": size[1],
        "nsfwLevel": 1, "type": "image", "createdAt": created, "postId": 1, "username": user, "baseModel": base,
        "stats": {"heartCount": hearts, "likeCount": likes, "laughCount": 1, "cryCount": 0,
                  "commentCount": comments, "dislikeCount": 0},
        "meta": meta, "images": [{"url": "x", "path": f"{image_id}.{ext}", "checksum": "0", "status": "downloaded"}],
    }


def make_harvest(folder: Path) -> dict[str, Any]:
    """A small harvest: thumbs, a video, hostile and unicode prompts, an image with no metadata at all."""
    folder.mkdir(parents=True)
    more = [
        "portrait of an astronaut, studio light, film grain",
        "isometric cozy cabin in the woods, soft shadows",
        "watercolor harbour at sunrise, boats, gulls",
        "cyberpunk alley in the rain, neon signs, reflections",
        "macro photo of a dew drop on a leaf",
        "ancient library with floating books, volumetric light",
        "minimalist mountain poster, flat colors",
    ]
    specs: dict[int, dict[str, Any]] = {
        101: dict(ext="png", size=(640, 800), thumbs=("small", "big"), prompt=FOX_PROMPT, neg="blurry, lowres",
                  item=dict(hearts=12, likes=3, comments=2, user="alice", created="2025-03-05T10:00:00.000Z")),
        102: dict(ext="jpg", size=(768, 768), thumbs=("small", "big"), prompt=XSS_PROMPT, neg="<b>bold</b> & worse",
                  item=dict(hearts=95, likes=7, comments=9, user="mallory<i>", base="Pony",
                            created="2025-03-01T08:00:00.000Z")),
        103: dict(ext="png", size=(512, 640), thumbs=(), prompt=None, neg=None, item=None),  # files only, no meta
        104: dict(ext="mp4", size=(720, 1280), thumbs=(), prompt="a short clip of waves", neg=None,
                  item=dict(hearts=40, likes=1, user="bob", base="Wan Video", created="2025-02-01T00:00:00.000Z")),
        105: dict(ext="jpg", size=(640, 960), thumbs=("small",), prompt=UNICODE_PROMPT, neg="низкое качество",
                  item=dict(hearts=30, likes=200, user="zoë", created="2025-03-06T00:00:00.000Z")),
    }
    for n, text in enumerate(more):
        specs[106 + n] = dict(ext="jpg" if n % 2 else "png", size=[(640, 800), (800, 640), (640, 640)][n % 3],
                              thumbs=("small", "big"), prompt=text, neg="worst quality",
                              item=dict(hearts=20 - n, likes=n, comments=n % 3, user="carol",
                                        created=f"2025-02-{10 + n:02d}T12:00:00.000Z"))
    items_lines = []
    for image_id, spec in specs.items():
        path = folder / f"{image_id}.{spec['ext']}"
        if spec["ext"] == "mp4":
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # not playable: a card, no picture
        else:
            im = art(image_id, spec["size"])
            save(im, path)
            for name in spec["thumbs"]:
                thumb = im.copy()
                thumb.thumbnail((60, 60) if name == "small" else (270, 270))
                save(thumb, folder / "thumbs" / name / f"{image_id}.jpg")
        meta = None
        if spec["prompt"] is not None:
            (folder / f"{image_id}_pos-prompt.txt").write_text(spec["prompt"], "utf-8")
            meta = {"prompt": spec["prompt"], "seed": image_id}
            if spec["neg"]:
                (folder / f"{image_id}_neg-prompt.txt").write_text(spec["neg"], "utf-8")
                meta["negativePrompt"] = spec["neg"]
            (folder / f"{image_id}_meta.json").write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
        if spec["item"] is not None:
            line = item(image_id, size=spec["size"], meta=meta, **spec["item"])
            items_lines.append(json.dumps(line, ensure_ascii=False))
    items_lines.insert(3, "this is not json")
    items_lines.append(json.dumps(item(999, hearts=10_000)))  # failed image: not in the folder
    (folder / "items.jsonl").write_text("\n".join(items_lines) + "\n", "utf-8")
    (folder / "downloaded_ids.txt").write_text("".join(f"{i}\n" for i in specs), "utf-8")
    (folder / "failures.jsonl").write_text('{"id": 998, "reason": "http_404"}\n{"id": 999, "reason": "truncated"}\n')
    (folder / ".113.png.ab12cd.part").write_bytes(b"partial")  # a write in progress
    (folder / "113_meta.json").write_text("{}")  # metadata without its image: no card
    return {"ids": sorted(specs), "specs": specs}


def read_data(page: Path) -> dict[str, Any]:
    text = page.read_text("utf-8")
    start = text.index(DATA_OPEN) + len(DATA_OPEN)
    return json.loads(text[start:text.index("</script>", start)])


def records_by_id(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    names = ["id", "ext", "thumb", "width", "height", "prompt", "neg", "user", "base", "created", "stats", "meta"]
    out = {}
    for r in data["records"]:
        rec = dict(zip(names, r, strict=True))
        for key in ("prompt", "neg", "user", "base"):
            rec[key] = data["strings"][rec[key]]
        out[rec["id"]] = rec
    return out


@pytest.fixture(scope="module")
def harvest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    # A space and a '#' in the path: links must be URL-encoded to work.
    folder = tmp_path_factory.mktemp("gallery") / "my harvest #1"
    return folder, make_harvest(folder)


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "civitai_spider.gallery", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


# --- generation -----------------------------------------------------------------------


def test_cli_writes_a_safe_self_contained_page(harvest):
    folder, info = harvest
    result = run_cli(folder)
    assert result.returncode == 0, result.stderr
    page = folder / "gallery.html"
    assert result.stdout.strip() == str(page)
    text = page.read_text("utf-8")

    data = read_data(page)
    assert sorted(r[0] for r in data["records"]) == info["ids"]  # every image, once
    assert data["base"] == ""  # the page sits in the folder: links are plain relative names
    # The hostile prompt is in the page, but only as escaped JSON text.
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in text
    assert "\\u003clora:x:1\\u003e" in text
    assert "<script>alert" not in text.lower() and "<img src=x" not in text.lower()
    assert "<lora:" not in text and "mallory<i>" not in text
    assert "замок на горе" in text and "zoë" in text  # UTF-8, not \\u-escaped
    # Nothing loaded from anywhere else: no script/style/font URLs, no CDN.
    lowered = text.lower()
    assert "<script src" not in lowered and "<link" not in lowered and "@import" not in lowered
    assert "url(" not in lowered and "//cdn" not in lowered
    assert lowered.count("http://") == lowered.count('"http://www.w3.org/2000/svg"')
    assert lowered.count("https://") == 1  # the "civitai" link built per card
    assert not list(folder.glob(".gallery.html*"))  # written atomically, nothing left over
    assert "INFO: " in result.stderr and "Traceback" not in result.stderr


def test_records_from_files_items_and_headers(harvest, tmp_path):
    folder, info = harvest
    out = tmp_path / "site" / "index.html"
    result = gallery.build_gallery(folder, out)

    assert result.out == out and result.images == len(info["ids"]) and result.videos == 1
    assert result.with_items == len(info["ids"]) - 1  # 103 has no item; 999 is not in the folder
    data = read_data(out)
    # Paths relative to the page, each segment URL-encoded.
    assert data["base"].startswith("../") and data["base"].endswith("/my%20harvest%20%231/")
    assert urlparse(data["base"]).scheme == ""
    assert (out.parent / unquote(data["base"])).resolve() == folder.resolve()
    assert data["thumbs"] == ["big"]  # small (60 px) would blur in a card
    assert data["failures"] == 2 and data["pageSize"] == 200

    recs = records_by_id(data)
    assert sorted(recs) == info["ids"]
    assert [r[0] for r in data["records"]] == sorted(info["ids"], reverse=True)
    fox, xss, bare, video, uni = (recs[i] for i in (101, 102, 103, 104, 105))
    assert fox["prompt"] == FOX_PROMPT and fox["neg"] == "blurry, lowres" and fox["meta"] == 1
    assert fox["stats"] == [12, 3, 1, 0, 2, 0] and fox["user"] == "alice" and fox["base"] == "SDXL 1.0"
    assert (fox["ext"], fox["thumb"], fox["width"], fox["height"]) == ("png", 1, 640, 800)
    assert xss["prompt"] == XSS_PROMPT and xss["user"] == "mallory<i>" and xss["stats"][0] == 95
    # No item, no metadata: size from the header, reactions unknown.
    assert (bare["width"], bare["height"], bare["stats"], bare["prompt"], bare["meta"]) == (512, 640, None, "", 0)
    assert (video["ext"], video["thumb"], video["width"], video["height"]) == ("mp4", 0, 720, 1280)
    assert uni["prompt"] == UNICODE_PROMPT and uni["neg"] == "низкое качество"
    assert uni["thumb"] == 0  # it has only a 60 px thumb: the image itself
    assert 113 not in recs and 999 not in recs


def test_without_items_files_are_read(harvest, tmp_path):
    folder, info = harvest
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("items.jsonl", "gallery.html"))
    (bare / "105.jpg").unlink()
    rotated = art(5, (300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 200 x 300
    rotated.save(bare / "105.jpg", exif=exif)

    gallery.build_gallery(bare, thumbs="small")

    data = read_data(bare / "gallery.html")
    assert data["base"] == "" and data["thumbs"] == ["small"] and data["withItems"] == 0
    recs = records_by_id(data)
    assert all(r["stats"] is None and r["user"] == "" for r in recs.values())
    assert recs[101]["prompt"] == FOX_PROMPT and recs[102]["neg"] == "<b>bold</b> & worse"
    assert (recs[101]["thumb"], recs[105]["thumb"], recs[103]["thumb"]) == (1, 1, 0)  # --thumbs small, even at 60 px
    assert (recs[101]["width"], recs[101]["height"]) == (640, 800)
    assert (recs[105]["width"], recs[105]["height"]) == (200, 300)
    assert (recs[104]["width"], recs[104]["height"]) == (0, 0)  # a video: no header read


def test_items_option_and_json_array_export(harvest, tmp_path):
    folder, _ = harvest
    export = tmp_path / "images.json"  # scrapy -O images.json: a JSON array, one item a line
    lines = [json.dumps(item(103, hearts=7, size=(1, 2), user="dave", meta={"prompt": "from the item"}))]
    export.write_text("[\n" + ",\n".join(lines) + "\n]", "utf-8")
    out = tmp_path / "g.html"

    result = run_cli(folder, "--items", export, "--out", out, "--page-size", "50", "-q")

    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    data = read_data(out)
    recs = records_by_id(data)
    assert data["withItems"] == 1 and data["pageSize"] == 50
    assert recs[103]["stats"][0] == 7 and recs[103]["user"] == "dave" and recs[103]["prompt"] == "from the item"
    assert (recs[103]["width"], recs[103]["height"]) == (1, 2)  # the item's size wins over the header
    assert recs[101]["stats"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nope"], "error: folder not found: "),
        (["{tmp}/file.txt"], "error: not a folder: "),
        (["{tmp}", "--items", "{tmp}/missing.jsonl"], "error: items file not found: "),
        (["{tmp}", "--thumbs", "huge"], "error: no thumbnails named 'huge'"),
    ],
)
def test_clear_errors(tmp_path, args, message):
    (tmp_path / "file.txt").write_text("x")
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(message), result.stderr
    assert result.stderr.count("error:") == 1, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "gallery.html").exists()


def test_empty_folder(tmp_path):
    result = gallery.build_gallery(tmp_path)
    assert result.images == 0 and read_data(result.out)["records"] == []


def one_pixel_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 80, 80)).save(buf, "PNG")
    return buf.getvalue()


def make_big_harvest(folder: Path, count: int, *, with_items_every: int = 2) -> None:
    """``count`` one-pixel PNGs, every other one with a prompt file, items for every ``with_items_every``-th."""
    folder.mkdir(parents=True, exist_ok=True)
    png = one_pixel_png()
    base = str(folder)
    source = ""
    with open(folder / "items.jsonl", "w", encoding="utf-8") as items:
        for image_id in range(1, count + 1):
            path = f"{base}/{image_id}.png"
            if image_id % 10_000 == 1:  # a fresh source now and then: ext4 allows 65,000 links to a file
                source = path
                with open(path, "wb") as f:
                    f.write(png)
            else:
                try:
                    os.link(source, path)  # far quicker than writing 100,000 files
                except OSError:
                    shutil.copyfile(source, path)
            if image_id % 2:
                with open(f"{base}/{image_id}_pos-prompt.txt", "w", encoding="utf-8") as f:
                    f.write(f"prompt number {image_id}, <lora:detail:0.{image_id % 10}>")
            if image_id % with_items_every == 0:
                line = item(image_id, hearts=image_id % 997, likes=image_id % 13, size=(832, 1216),
                            user=f"user{image_id % 50}", meta={"prompt": f"item prompt {image_id}"})
                items.write(json.dumps(line) + "\n")


def test_a_large_harvest_is_one_compact_page(tmp_path):
    """The page's size grows by ~100 bytes a card, not a DOM per card (its speed at 100,000
    images is measured by ``bench/gallery_size.py``, not asserted here)."""
    folder = tmp_path / "big"
    make_big_harvest(folder, 5_000)

    result = gallery.build_gallery(folder)

    assert result.images == 5_000 and result.with_items == 2_500
    assert 50 < result.bytes_written / 5_000 < 300
    data = read_data(result.out)
    assert len(data["records"]) == 5_000
    recs = records_by_id(data)
    assert recs[4_999]["prompt"].startswith("prompt number 4999") and recs[4_999]["width"] == 1
    assert recs[5_000]["prompt"] == "item prompt 5000" and recs[5_000]["width"] == 832
    assert recs[4_998]["stats"][0] == 4_998 % 997


# --- a real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1000", "--force-device-scale-factor=1",
        "--hide-scrollbars", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, page: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    ready = "return document.documentElement.dataset.ready === '1'"
    WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda d: d.execute_script(ready))


def card_ids(driver) -> list[int]:
    script = "return [...document.querySelectorAll('.card')].map(c => c.dataset.id)"
    return [int(x) for x in driver.execute_script(script)]


def wait_visible_images_loaded(driver, timeout: float = 20) -> int:
    """Wait until every <img> in the viewport has loaded; return how many there are."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = """
      const imgs = [...document.querySelectorAll('.card img')].filter(i => {
        const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; });
      return [imgs.length, imgs.filter(i => i.complete && i.naturalWidth > 0).length];"""
    def all_loaded(d: Any) -> bool:
        shown, loaded = d.execute_script(script)
        return 0 < shown == loaded

    WebDriverWait(driver, timeout, poll_frequency=0.05).until(all_loaded)
    return driver.execute_script(script)[0]


def type_filter(driver, text: str, expected: list[int] | int) -> None:
    """Type ``text`` in the filter and wait for the cards (ids, or how many) it should leave."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "filter")
    box.clear()
    if text:
        box.send_keys(text)
    else:  # clear() sends no input event
        driver.execute_script("arguments[0].dispatchEvent(new Event('input'))", box)
    assert box.get_property("value") == text
    done = (lambda ids: ids == expected) if isinstance(expected, list) else (lambda ids: len(ids) == expected)
    WebDriverWait(driver, 10, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.getElementById('grid').dataset.query") == text.strip()
        and done(card_ids(d))
    )


def choose_sort(driver, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "sort")).select_by_value(value)


def test_browser_cards_filter_sort_and_screenshot(browser, harvest, tmp_path):
    from selenium.webdriver.common.by import By

    folder, info = harvest
    gallery.build_gallery(folder)
    open_page(browser, folder / "gallery.html")

    assert sorted(card_ids(browser)) == info["ids"]
    loaded = wait_visible_images_loaded(browser)
    assert loaded >= 4
    # Thumbnails are used when present, and the links resolve into the (space and '#') folder.
    fox = browser.find_element(By.CSS_SELECTOR, '.card[data-id="101"]')
    assert fox.find_element(By.TAG_NAME, "img").get_attribute("src").endswith("/my%20harvest%20%231/thumbs/big/101.jpg")
    hrefs = [a.get_attribute("href") for a in fox.find_elements(By.CSS_SELECTOR, ".links a")]
    assert hrefs[:2] == [(folder / "101.png").as_uri(), (folder / "101_meta.json").as_uri()]
    img = fox.find_element(By.TAG_NAME, "img")
    assert [img.get_dom_attribute(a) for a in ("width", "height", "loading")] == ["640", "800", "lazy"]
    # The hostile prompt is shown as text and never ran.
    xss = browser.find_element(By.CSS_SELECTOR, '.card[data-id="102"] .prompt')
    assert xss.text.startswith("<script>alert(1)</script><img src=x")
    assert browser.execute_script("return window.__pwned === undefined && !document.querySelector('img[src=\"x\"]')")
    # The card without any metadata says so.
    bare = browser.find_element(By.CSS_SELECTOR, '.card[data-id="103"]')
    assert "reactions unknown" in bare.text and "512×640" in bare.text and "no prompt" in bare.text
    # Click a prompt: it expands with the negative prompt.
    browser.find_element(By.CSS_SELECTOR, '.card[data-id="101"] .prompt').click()
    assert "Negative: blurry, lowres" in browser.find_element(By.CSS_SELECTOR, '.card[data-id="101"]').text

    type_filter(browser, "RED FOX", [101])
    type_filter(browser, "ZOË", [105])  # user name
    type_filter(browser, "pony", [102])  # base model
    type_filter(browser, "103", [103])  # id
    type_filter(browser, "<lora:x:1> fox", [101])  # every word must match
    type_filter(browser, "no such thing", 0)
    assert browser.find_element(By.ID, "empty").is_displayed()
    type_filter(browser, "", len(info["ids"]))

    choose_sort(browser, "hearts")
    assert card_ids(browser)[:3] == [102, 104, 105]
    choose_sort(browser, "likes")
    assert card_ids(browser)[0] == 105
    choose_sort(browser, "total")
    assert card_ids(browser)[0] == 105 and card_ids(browser)[-1] == 103  # unknown reactions last
    choose_sort(browser, "id")
    assert card_ids(browser) == info["ids"]
    choose_sort(browser, "newest")
    assert card_ids(browser)[:2] == [105, 101]

    type_filter(browser, "sdxl", [105, 101, 112, 111, 110, 109, 108, 107, 106])  # the README's picture
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    wait_visible_images_loaded(browser)
    shot = tmp_path / "gallery.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 1000
    if os.environ.get("CIVITAI_UPDATE_DOCS"):  # CIVITAI_UPDATE_DOCS=1 python -m pytest tests/test_gallery.py
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "gallery.png")


def test_browser_paging(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tmp_path / "paged"
    make_big_harvest(folder, 450, with_items_every=1)
    gallery.build_gallery(folder)
    open_page(browser, folder / "gallery.html")

    def counter() -> str:
        return browser.find_element(By.CSS_SELECTOR, "#pager-top .count").text

    def click(label: str) -> None:
        browser.find_element(By.XPATH, f"//nav[@id='pager-top']/button[normalize-space()='{label}']").click()

    first = card_ids(browser)
    assert len(first) == 200 and first[0] == 450 and counter() == "Page 1 / 3"
    assert wait_visible_images_loaded(browser) > 0
    prev = browser.find_element(By.XPATH, "//nav[@id='pager-top']/button[normalize-space()='‹ Prev']")
    assert prev.get_dom_attribute("disabled") is not None
    click("Next ›")
    second = card_ids(browser)
    assert len(second) == 200 and counter() == "Page 2 / 3" and not set(first) & set(second)
    click("Next ›")
    assert len(card_ids(browser)) == 50 and counter() == "Page 3 / 3"
    assert browser.execute_script("return document.querySelectorAll('.card').length") == 50
    click("‹ Prev")
    assert card_ids(browser) == second
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    WebDriverWait(browser, 5, poll_frequency=0.05).until(lambda d: card_ids(d) == first)

    # Sorting and filtering start again from page 1.
    choose_sort(browser, "hearts")
    assert counter() == "Page 1 / 3" and card_ids(browser)[0] == max(range(1, 451), key=lambda i: (i % 997, i))
    type_filter(browser, "user7", [407, 357, 307, 257, 207, 157, 107, 57, 7])
    assert not browser.find_element(By.ID, "pager-top").is_displayed()  # one page: no pager


def test_browser_100k_records_page_filter_and_sort(browser, tmp_path):
    """A page over 100,000 records (no files behind them: only the page's own speed counts)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    count = 100_000
    strings = ["", "worst quality, lowres, bad anatomy", "SDXL 1.0", "Pony"]
    strings += [f"user{i}" for i in range(500)]
    first_prompt = len(strings)
    strings += [f"prompt number {i}, a castle <lora:detail:0.{i % 10}>, masterpiece" for i in range(1, count + 1)]
    records = [
        [i, "png", 0, 832, 1216, first_prompt + i - 1, 1, 4 + i % 500, 2 + i % 2,
         f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00.000Z", [(i * 7919) % 100_003, i % 13, 0, 0, i % 5, 0], 1]
        for i in range(1, count + 1)
    ]
    payload = {"version": 1, "base": "", "thumbs": [], "pageSize": 200, "failures": 0, "withItems": count,
               "strings": strings, "records": records}
    page = tmp_path / "huge.html"
    with open(page, "w", encoding="utf-8") as f:
        gallery.write_page(f, payload, "100k")

    started = time.perf_counter()
    open_page(browser, page)
    loaded = time.perf_counter() - started
    assert len(card_ids(browser)) == 200
    assert browser.find_element(By.CSS_SELECTOR, "#pager-top .count").text == "Page 1 / 500"

    started = time.perf_counter()
    type_filter(browser, "number 99999,", [99999])
    filtered = time.perf_counter() - started
    type_filter(browser, "", 200)
    started = time.perf_counter()
    choose_sort(browser, "hearts")
    best = max(range(1, count + 1), key=lambda i: ((i * 7919) % 100_003, i))
    WebDriverWait(browser, 20, poll_frequency=0.05).until(lambda d: card_ids(d)[0] == best)
    ordered = time.perf_counter() - started
    print(f"\n100k page: {page.stat().st_size / 1e6:.1f} MB, ready in {loaded:.2f} s, "
          f"filter {filtered:.2f} s, sort {ordered:.2f} s")
    assert browser.execute_script("return document.querySelectorAll('.card').length") == 200
    # Times are printed, not asserted (a shared machine is noisy); the waits above bound them.


# --- a crawled store: the records (N.json) are enough -----------------------------------


@pytest_twisted.ensureDeferred
async def test_a_crawled_store_needs_no_feed_export(server, tmp_path, caplog):
    from tests.support import api_image, image_bytes, run_crawl, scenario

    store = tmp_path / "store"
    images = [api_image(1, hearts=12, likes=3, comments=2, username="alice", createdAt="2025-03-05T10:00:00.000Z",
                        file="jpeg", prompt="a red fox"),
              api_image(2, hearts=40, username="bob", baseModel="Pony", file="jpeg", prompt="a lighthouse"),
              api_image(3, hearts=7, username="carol", file="jpeg", prompt="a cabin")]
    server.load(scenario(images, {"jpeg": image_bytes("JPEG", size=(80, 60))}))
    await run_crawl(server, {"IMAGES_STORE": str(store)})
    # An image stored by a version before records: its reactions come from a feed export, if any.
    (store / "3.json").unlink()
    (store / "items.jsonl").write_text(json.dumps(item(3, hearts=7, user="carol", size=(80, 60))) + "\n")
    (store / "2.json").write_text("{not json")  # damaged: prompts from the files, a warning

    with caplog.at_level("INFO", logger="civitai_spider.gallery"):
        result = gallery.build_gallery(store)

    cards = records_by_id(read_data(result.out))
    assert cards[1]["stats"] == [12, 3, 0, 0, 2, 0] and cards[1]["user"] == "alice"
    assert cards[1]["created"] == "2025-03-05T10:00:00.000Z" and cards[1]["prompt"] == "a red fox"
    assert (cards[1]["width"], cards[1]["height"]) == (64, 64)  # the API's size, from the record
    assert cards[3]["stats"] == [7, 0, 1, 0, 0, 0] and cards[3]["user"] == "carol"  # from the feed export
    assert cards[2]["stats"] is None and cards[2]["prompt"] == "a lighthouse"  # damaged record: files only
    assert "1 image records (N.json) could not be read" in caplog.text
    assert result.with_items == 2
