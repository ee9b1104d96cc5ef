"""The search page (``server/static``, served at ``/``) in a real headless Chromium.

One real HTTP app (``server.http.create_app`` over a real ``SearchService`` and a real
``reid.gallery.Gallery``, with the colour runtime of ``tests/server_fakes.py``) runs in a
thread on 127.0.0.1, with a small gallery of person-like crops: four identities (one
colour each) seen twice on each of three cameras. Reads need a key and writes another,
so the page has to send ``X-API-Key`` on every call, thumbnails included. One browser
serves the whole module; the browser cannot resolve any other host, so a page that
loaded anything from a CDN would break here.

The browser is Debian's ``chromium`` + ``chromedriver`` (``scripts/install_browser.sh``
installs them; ``.ci/run`` runs it). Without them these tests skip, except in CI
(``CI=true``), where they fail. Screenshots are saved under the module's tmp dir (or
``$WEB_PAGE_SCREENSHOTS``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.server_fakes import ColourRuntime

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
READ_KEY = "reader-key"
WRITE_KEY = "writer-key"
T0 = 1_714_557_600.0  # 2024-05-01 10:00:00 UTC
IDENTITIES = {
    "red": (205, 40, 45),
    "green": (40, 165, 70),
    "blue": (45, 75, 205),
    "yellow": (225, 195, 45),
}
CAMERAS = (0, 1, 2)
NASTY = '<img src=x onerror="alert(1)"> & <b>bold</b>'
WAIT = 10.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Fail in CI (the browser is part of the test environment there), skip elsewhere."""
    message = (
        f"browser tests need Debian's chromium + chromedriver and selenium: {reason} "
        "(install them with: bash scripts/install_browser.sh)"
    )
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as error:  # pragma: no cover - only without the dev extra
    webdriver = None
    SELENIUM_ERROR = str(error)


# -- the gallery ---------------------------------------------------------------------------


def crop(colour: tuple[int, int, int], shade: float, seed: int) -> bytes:
    """A 64x128 person-like PNG: head, shirt of ``colour`` (times ``shade``), dark legs."""
    rng = np.random.default_rng(seed)
    shirt = tuple(int(min(255, c * shade)) for c in colour)
    image = Image.new("RGB", (64, 128), (150, 152, 148))
    draw = ImageDraw.Draw(image)
    draw.ellipse((22, 6, 42, 28), fill=(224, 188, 160))
    draw.rounded_rectangle((12, 28, 52, 80), radius=8, fill=shirt)
    draw.rectangle((18, 80, 30, 122), fill=(50, 52, 64))
    draw.rectangle((34, 80, 46, 122), fill=(50, 52, 64))
    pixels = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (128, 64, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def gallery_items() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(identity, image, metadata): each identity walks past camera 0, 1, then 2."""
    items = []
    for p, (name, colour) in enumerate(IDENTITIES.items()):
        for camera in CAMERAS:
            for j in range(2):
                t = T0 + 90 * p + 600 * camera + 25 * j
                meta = {
                    "camera": camera,
                    "timestamp": t,
                    "track": 10 * p + camera,
                    "box": [100 + 40 * p, 60 + 10 * j, 64, 128],
                    "source": f"cam{camera}.mp4",
                }
                items.append(
                    (name, crop(colour, 0.93 + 0.05 * j + 0.02 * camera, len(items)), meta)
                )
    items[-1][2]["source"] = NASTY  # the page must show it as text
    return items


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, ids: dict[int, str]) -> None:
        self.url = url
        self.identity = ids  # entry id -> identity name
        self.nasty_id = max(ids)

    def ids_of(self, name: str) -> set[int]:
        return {i for i, n in self.identity.items() if n == name}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import uvicorn

    from reid.gallery import Gallery
    from server.http import create_app
    from server.service import SearchService
    from server.settings import ServerSettings

    runtime = ColourRuntime()
    directory = tmp_path_factory.mktemp("web_gallery") / "gallery"
    settings = ServerSettings(
        max_images=8, api_key=WRITE_KEY, read_key=READ_KEY, grpc=False, max_wait_ms=1
    )
    service = SearchService(
        runtime, Gallery.open(directory, runtime.manifest.embedding_dim, index="flat"), settings
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, service), host="127.0.0.1", port=port, log_level="warning"
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    items = gallery_items()
    files = [("images", (f"{i}.png", image, "image/png")) for i, (_, image, _) in enumerate(items)]
    answer = httpx.post(
        f"{url}/v1/gallery",
        files=files[:8],
        data={"metadata": json.dumps([m for _, _, m in items[:8]])},
        headers={"X-API-Key": WRITE_KEY},
    )
    ids: list[int] = answer.raise_for_status().json()["ids"]
    for start in range(8, len(items), 8):
        chunk = items[start : start + 8]
        answer = httpx.post(
            f"{url}/v1/gallery",
            files=files[start : start + 8],
            data={"metadata": json.dumps([m for _, _, m in chunk])},
            headers={"X-API-Key": WRITE_KEY},
        )
        ids += answer.raise_for_status().json()["ids"]
    yield Server(url, {i: name for i, (name, _, _) in zip(ids, items, strict=True)})
    uv.should_exit = True
    thread.join(timeout=10)


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("WEB_PAGE_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if webdriver is None:
        unavailable(f"selenium is not installed ({SELENIUM_ERROR})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            unavailable(f"{path} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium_profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
        # Only the test server resolves: a page that needs a CDN would break here.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as error:
        unavailable(f"chromium did not start: {error.msg}")
    browser.set_page_load_timeout(20)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(browser: Any, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.05).until(lambda _: condition())
    except TimeoutException:
        message = browser.find_element(By.ID, "message").text
        raise AssertionError(f"timed out waiting for {what} (page message: {message!r})") from None


class Page:
    """The page in the browser, with the few steps the tests repeat."""

    def __init__(self, browser: Any, server: Server, shots: Path) -> None:
        self.b = browser
        self.server = server
        self.shots = shots

    def by_id(self, element_id: str) -> WebElement:
        return self.b.find_element(By.ID, element_id)

    def css(self, selector: str) -> list[WebElement]:
        return self.b.find_elements(By.CSS_SELECTOR, selector)

    def open(self, key: str | None = READ_KEY) -> None:
        self.b.get(self.server.url + "/")
        wait_for(
            self.b,
            lambda: self.b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"),
            "page load",
        )
        if key is not None:
            self.use_key(key)

    def use_key(self, key: str) -> None:
        field = self.by_id("api-key")
        field.clear()
        field.send_keys(key)
        self.b.execute_script(  # so that the waits below see the new answers, not the old
            "document.getElementById('gallery-grid').replaceChildren();"
            "document.getElementById('server-info').textContent = '';"
        )
        self.css("#key-form button[type=submit]")[0].click()
        wait_for(self.b, lambda: "entries on" in self.by_id("server-info").text, "server info")
        wait_for(self.b, lambda: self.css("#gallery-grid .card"), "the gallery")

    def message(self, kind: str) -> str:
        """The message of this kind (error, info) the page shows, or "" (read in one step:
        the page replaces its message element as it goes)."""
        return self.b.execute_script(
            "const box = document.getElementById('message');"
            "const text = box.querySelector('span');"
            "return !box.hidden && box.classList.contains(arguments[0]) && text"
            " ? text.textContent : '';",
            kind,
        )

    def error(self) -> str:
        return self.message("error")

    def info(self) -> str:
        return self.message("info")

    def set(self, element_id: str, value: str) -> None:
        field = self.by_id(element_id)
        field.clear()
        if value:
            field.send_keys(value)

    def search(self) -> list[WebElement]:
        self.b.execute_script("document.getElementById('view-grid').replaceChildren()")
        self.by_id("search-button").click()
        return wait_for(self.b, lambda: self.css("#view-grid .card"), "search results")

    def ids(self, cards: list[WebElement]) -> list[int]:
        return [int(card.get_attribute("data-id")) for card in cards]

    def cameras(self, cards: list[WebElement]) -> list[int]:
        return [int(card.get_attribute("data-camera")) for card in cards]

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.b.save_screenshot(str(path))
        return path

    def errors_in_console(self) -> list[str]:
        """Script errors (failed requests the page reports itself are expected)."""
        entries = self.b.get_log("browser")
        return [
            e["message"]
            for e in entries
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]


@pytest.fixture
def page(driver: Any, server: Server, shots: Path) -> Iterator[Page]:
    driver.get_log("browser")  # start each test with an empty console
    ui = Page(driver, server, shots)
    yield ui
    assert ui.errors_in_console() == []


def query_file(tmp_path: Path, name: str, seed: int) -> str:
    path = tmp_path / f"query_{name}.png"
    path.write_bytes(crop(IDENTITIES[name], 1.0, 1000 + seed))
    return str(path)


# -- the tests -----------------------------------------------------------------------------


def test_page_is_served_offline_and_asks_for_the_read_key(page: Page) -> None:
    page.open(key=None)
    wait_for(page.b, lambda: "needs an API key" in page.by_id("server-info").text, "key notice")
    assert "key" in page.error().lower()
    page.use_key(READ_KEY)
    assert "24 entries on 3 cameras" in page.by_id("server-info").text
    loaded = page.b.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(name.startswith(page.server.url) for name in loaded), loaded
    # thumbnails come through fetch() with the key, as blob: URLs
    wait_for(page.b, lambda: page.css("#gallery-grid img[src^='blob:']"), "thumbnails")
    img = page.css("#gallery-grid img[src^='blob:']")[0]
    wait_for(
        page.b,
        lambda: page.b.execute_script("return arguments[0].naturalWidth", img) > 0,
        "decoded thumbnail",
    )
    headers = httpx.get(page.server.url + "/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert httpx.get(page.server.url + "/static/..%2Fhttp.py").status_code == 404


def test_upload_a_crop_finds_the_same_person_then_filters_by_camera(
    page: Page, tmp_path: Path
) -> None:
    page.open()
    page.by_id("files").send_keys(query_file(tmp_path, "red", 1))
    wait_for(page.b, lambda: page.css("#query-previews img"), "query preview")
    page.set("k", "12")
    cards = page.search()
    red = page.server.ids_of("red")
    assert len(cards) == 12
    assert set(page.ids(cards)[:6]) == red, "the six crops of the red person come first"
    summary = page.by_id("query-summary").text
    assert "12 matches" in summary and "24 entries" in summary
    wait_for(page.b, lambda: len(page.css("#view-grid img[src^='blob:']")) == 12, "thumbnails")
    page.screenshot("search_results")

    page.set("cameras", "1")
    cards = page.search()
    assert set(page.cameras(cards)) == {1} and len(cards) == 8
    assert {page.server.identity[i] for i in page.ids(cards)[:2]} == {"red"}

    page.set("cameras", "")
    page.set("query-cameras", "0")
    page.by_id("exclude-same").click()
    cards = page.search()
    assert 0 not in page.cameras(cards)
    assert {page.server.identity[i] for i in page.ids(cards)[:4]} == {"red"}
    page.by_id("exclude-same").click()


def test_refused_input_shows_the_servers_message(page: Page, tmp_path: Path) -> None:
    page.open()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"these bytes are no image")
    page.by_id("files").send_keys(str(broken))
    page.by_id("search-button").click()
    error = wait_for(page.b, page.error, "the refusal")
    assert "decode" in error.lower() or "image" in error.lower(), error
    page.by_id("files").send_keys(query_file(tmp_path, "green", 2))
    page.set("exclude-cameras", "x")
    page.by_id("search-button").click()
    wait_for(page.b, lambda: "Exclude cameras" in page.error(), "the local check")


def test_dropping_two_crops_searches_both(page: Page) -> None:
    page.open()
    red, blue = (crop(IDENTITIES[n], 1.0, 2000 + i) for i, n in enumerate(("red", "blue")))
    page.b.execute_script(
        """
        const [red, blue] = arguments;
        const file = (b64, name) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          return new File([bytes], name, {type: "image/png"});
        };
        const data = new DataTransfer();
        data.items.add(file(red, "red.png"));
        data.items.add(file(blue, "blue.png"));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        """,
        *(base64.b64encode(b).decode() for b in (red, blue)),
    )
    wait_for(page.b, lambda: len(page.css("#query-previews img")) == 2, "two previews")
    page.set("k", "6")
    page.set("query-cameras", "2")
    page.search()
    groups = page.css("#view-grid .result-group")
    assert len(groups) == 2
    assert "camera 2" in groups[0].find_element(By.TAG_NAME, "h3").text
    for group, name in zip(groups, ("red", "blue"), strict=True):
        ids = page.ids(group.find_elements(By.CSS_SELECTOR, ".card"))
        assert {page.server.identity[i] for i in ids} == {name}


def test_timeline_places_sightings_per_camera_and_opens_one(page: Page, tmp_path: Path) -> None:
    page.open()
    page.by_id("files").send_keys(query_file(tmp_path, "red", 3))
    page.set("k", "24")
    page.search()
    scores = [float(s.text) for s in page.css("#view-grid .card .score")]  # best first, red first
    threshold = (scores[5] + scores[6]) / 2  # between the red person and everyone else
    page.by_id("tab-timeline").click()
    assert page.by_id("view-timeline").is_displayed()
    assert not page.by_id("view-grid").is_displayed()
    page.set("timeline-threshold", f"{threshold:.4f}")
    wait_for(page.b, lambda: len(page.css("#timeline circle.sighting")) == 6, "six sightings")
    rows = page.css("#timeline g.tl-row")
    assert [r.get_attribute("data-camera") for r in rows] == ["0", "1", "2"]
    dots = page.css("#timeline circle.sighting")
    assert {page.server.identity[int(d.get_attribute("data-id"))] for d in dots} == {"red"}
    # the person walks camera 0 -> 1 -> 2, so the dots go right row by row
    xs = [float(d.get_attribute("cx")) for d in dots]
    ys = [float(d.get_attribute("cy")) for d in dots]
    assert xs == sorted(xs) and ys == sorted(ys)
    assert "6 sightings" in page.by_id("timeline-note").text
    page.screenshot("timeline")

    dots[2].click()
    dialog = page.by_id("detail")
    wait_for(page.b, lambda: dialog.is_displayed(), "the detail dialog")
    img = page.by_id("detail-img")
    wait_for(
        page.b,
        lambda: page.b.execute_script("return arguments[0].naturalWidth", img) > 0,
        "thumbnail",
    )
    assert img.get_attribute("src").startswith("blob:")
    fields = page.by_id("detail-fields").text
    assert "Camera\n1" in fields and "x 100, y " in fields and "64 × 128" in fields
    assert "2024-05-01 10:10" in fields
    wait_for(page.b, lambda: "Added" in page.by_id("detail-fields").text, "the entry's own fields")
    page.screenshot("timeline_detail")
    page.b.find_element(By.CSS_SELECTOR, ".dialog-close button").click()
    wait_for(page.b, lambda: not dialog.is_displayed(), "the dialog to close")
    page.by_id("tab-grid").click()


def test_find_this_person_elsewhere_searches_by_entry(page: Page) -> None:
    page.open()
    first = page.css("#gallery-grid .card")[0]
    entry_id = int(first.get_attribute("data-id"))
    name = page.server.identity[entry_id]
    page.set("k", "8")
    page.by_id("exclude-same").click()
    first.find_element(By.CSS_SELECTOR, ".card-action").click()  # "Find elsewhere"
    cards = wait_for(page.b, lambda: page.css("#view-grid .card"), "results by entry")
    assert entry_id not in page.ids(cards), "the entry itself is left out"
    assert 0 not in page.cameras(cards), "its own camera (0) is excluded"
    assert {page.server.identity[i] for i in page.ids(cards)[:4]} == {name}
    assert f"gallery entry {entry_id}" in page.by_id("query-summary").text
    assert page.by_id("query-cameras").get_attribute("disabled") is not None
    # and again from a result: click one, then "Find this person elsewhere" in its dialog
    cards[1].find_element(By.CSS_SELECTOR, ".card-main").click()
    wait_for(page.b, lambda: page.by_id("detail").is_displayed(), "the detail dialog")
    second = int(cards[1].get_attribute("data-id"))
    page.by_id("detail-find").click()
    wait_for(page.b, lambda: f"gallery entry {second}" in page.by_id("query-summary").text, "2nd")
    cards = wait_for(page.b, lambda: page.css("#view-grid .card"), "results by entry")
    assert second not in page.ids(cards)
    assert page.server.identity[page.ids(cards)[0]] == name


def test_gallery_pages_and_filters(page: Page) -> None:
    page.open()
    Select(page.by_id("g-page-size")).select_by_visible_text("10")
    wait_for(page.b, lambda: page.by_id("g-range").text == "1–10 of 24", "page 1")
    assert page.by_id("g-prev").get_attribute("disabled") is not None
    first_page = page.ids(page.css("#gallery-grid .card"))
    assert first_page == sorted(first_page) and len(first_page) == 10
    page.by_id("g-next").click()
    wait_for(page.b, lambda: page.by_id("g-range").text == "11–20 of 24", "page 2")
    page.by_id("g-next").click()
    wait_for(page.b, lambda: page.by_id("g-range").text == "21–24 of 24", "page 3")
    assert page.by_id("g-next").get_attribute("disabled") is not None
    assert len(page.css("#gallery-grid .card")) == 4
    page.by_id("g-prev").click()
    wait_for(page.b, lambda: page.by_id("g-range").text == "11–20 of 24", "back to page 2")

    page.set("g-cameras", "2")
    page.set("g-time-from", "2024-05-01 10:20")
    page.css("#gallery-form button[type=submit]")[0].click()
    wait_for(page.b, lambda: page.by_id("g-range").text == "1–8 of 8", "camera 2 only")
    assert set(page.cameras(page.css("#gallery-grid .card"))) == {2}
    page.set("g-time-from", "2024-05-01 10:21")  # the red person passed camera 2 at 10:20
    page.css("#gallery-form button[type=submit]")[0].click()
    wait_for(page.b, lambda: page.by_id("g-range").text == "1–6 of 6", "after 10:21")
    page.b.execute_script("document.getElementById('gallery').scrollIntoView()")
    page.screenshot("gallery_filtered")


def test_server_strings_are_shown_as_text(page: Page) -> None:
    page.open()  # 25 per page: the last entry is on the first page
    nasty = page.server.nasty_id
    wait_for(page.b, lambda: page.css(f"#gallery-grid .card[data-id='{nasty}']"), "the entry")
    page.css(f"#gallery-grid .card[data-id='{nasty}'] .card-main")[0].click()
    wait_for(page.b, lambda: page.by_id("detail").is_displayed(), "the detail dialog")
    assert NASTY in page.by_id("detail-fields").text
    assert page.css("img[src='x']") == [] and page.css("#detail b") == []
    page.b.find_element(By.CSS_SELECTOR, ".dialog-close button").click()


def test_readme_screenshot(page: Page, tmp_path: Path) -> None:
    """The README's picture: results and their timeline of one search, in a tall window."""
    page.b.set_window_size(1280, 1560)
    try:
        page.open()
        page.by_id("files").send_keys(query_file(tmp_path, "red", 4))
        page.set("k", "12")
        page.set("query-cameras", "0")
        page.search()
        wait_for(page.b, lambda: len(page.css("#view-grid img[src^='blob:']")) == 12, "thumbs")
        assert page.by_id("api-key").get_attribute("value") == READ_KEY
        assert not page.by_id("message").is_displayed(), "a search clears the last message"
        page.screenshot("page_results")
        page.by_id("tab-timeline").click()
        page.set("timeline-threshold", "0.99")
        page.screenshot("page_timeline")
    finally:
        page.b.set_window_size(1280, 1000)


def test_delete_needs_the_write_key_and_a_confirmation(page: Page) -> None:
    page.open(key=READ_KEY)
    cards = page.css("#gallery-grid .card")
    victim = int(cards[3].get_attribute("data-id"))
    delete = cards[3].find_element(By.CSS_SELECTOR, ".card-action.danger")

    delete.click()
    page.b.switch_to.alert.dismiss()  # "cancel": nothing happens
    assert not page.error()

    delete.click()
    page.b.switch_to.alert.accept()
    wait_for(page.b, lambda: "write key" in page.error(), "the refusal with the read key")

    page.use_key(WRITE_KEY)
    card = page.css(f"#gallery-grid .card[data-id='{victim}']")[0]
    card.find_element(By.CSS_SELECTOR, ".card-action.danger").click()
    alert = page.b.switch_to.alert
    assert f"entry {victim}" in alert.text
    alert.accept()
    wait_for(page.b, lambda: f"Deleted entry {victim}" in page.info(), "the deletion")
    wait_for(page.b, lambda: "of 23" in page.by_id("g-range").text, "the new total")
    assert victim not in page.ids(page.css("#gallery-grid .card"))
    assert "23 entries" in page.by_id("server-info").text
    answer = httpx.get(f"{page.server.url}/v1/gallery/{victim}", headers={"X-API-Key": READ_KEY})
    assert answer.status_code == 404
    page.b.execute_script("document.getElementById('gallery').scrollIntoView()")
    page.screenshot("gallery_after_delete")


def test_docs_try_it_out_uploads_a_file_to_search(page: Page, tmp_path: Path) -> None:
    """``/docs`` works offline, and "Try it out" on ``/v1/search`` offers a file picker,
    leaves optional fields empty and sends a real image."""
    b = page.b
    b.get(page.server.url + "/docs")
    wait_for(b, lambda: page.css(".swagger-ui .opblock"), "Swagger UI", timeout=20)
    loaded = b.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith(page.server.url) for name in loaded), loaded

    page.css(".swagger-ui .btn.authorize")[0].click()
    key_input = wait_for(
        b,
        lambda: page.css(".dialog-ux input[type=text], .dialog-ux input[type=password]"),
        "key field",
    )
    key_input[0].send_keys(READ_KEY)
    page.css(".dialog-ux .auth-btn-wrapper .authorize")[0].click()
    page.css(".dialog-ux .btn-done, .dialog-ux .close-modal")[0].click()

    block = wait_for(
        b,
        lambda: [
            o
            for o in page.css(".opblock.opblock-post")
            if o.find_elements(By.CSS_SELECTOR, "[data-path='/v1/search']")
        ],
        "the /v1/search operation",
    )[0]
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(b, lambda: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"), "Try it out")
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    files = wait_for(b, lambda: block.find_elements(By.CSS_SELECTOR, "input[type=file]"), "picker")
    for name in ("time_from", "time_to", "min_score"):  # optional: left empty, not 0
        (field,) = block.find_elements(By.CSS_SELECTOR, f"input[placeholder='{name}']")
        assert field.get_attribute("value") == "", name
    files[0].send_keys(query_file(tmp_path, "green", 5))
    block.find_element(By.CSS_SELECTOR, ".btn.execute").click()
    status = wait_for(
        b,
        lambda: block.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        ),
        "the response",
    )
    assert status[0].text.strip() == "200", block.find_element(
        By.CSS_SELECTOR, ".live-responses-table"
    ).text
    body = json.loads(block.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text)
    first = body["results"][0]["matches"][0]["id"]
    assert page.server.identity[first] == "green"
    b.execute_script(
        "arguments[0].scrollIntoView()", block.find_element(By.CSS_SELECTOR, ".btn.execute")
    )
    page.screenshot("docs_try_it_out")
