"""The dashboard in a real browser: Debian's Chromium driven by playwright, against a real
uvicorn on loopback over a real SQLite file, and against the static export on file://.
Screenshots go to artifacts/ (look at them: they are what a user sees).

Needs `apt-get install -y chromium` and the `playwright` Python package (never `playwright
install`: the browser is the distribution's)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import filled_store

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not CHROMIUM.exists():
    pytest.skip(
        "\n\n*** BROWSER TESTS SKIPPED: /usr/bin/chromium is missing. Install it with "
        "`apt-get install -y chromium` (Debian's package) to run them. ***\n",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="*** BROWSER TESTS SKIPPED: pip install playwright ***"
)

from test_service_api import XSS, history  # noqa: E402  (after the skips: same test data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(url: str):
    """The real site over the store at `url`, served by uvicorn on loopback; its base URL."""
    import uvicorn

    from service.app import create_app

    port = free_port()
    config = uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def db_url(tmp_path_factory) -> str:
    return filled_store(tmp_path_factory.mktemp("browser"), history())


@pytest.fixture(scope="module")
def server(db_url):
    with serving(db_url) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.alerts = []  # an alert() would mean a script from the data ran
    pg.on("dialog", lambda d: (pg.alerts.append(d.message), d.dismiss()))
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    yield pg
    context.close()


def rows(pg) -> list[str]:
    return pg.locator("tr[data-model]:visible").evaluate_all(
        "rs => rs.map(r => r.getAttribute('data-model'))"
    )


def test_matrix_opens_with_every_model_and_status_words(page, server):
    page.goto(server + "/")
    assert page.title().startswith("The matrix")
    assert rows(page) == ["org/beta", "old/gamma", "org/alpha"]
    alpha_vllm = page.locator('tr[data-model="org/alpha"] td[data-engine="vllm"]')
    assert "pass" in alpha_vllm.inner_text()
    # the strip, run-length encoded: 8 nights without results, 2 failing, 4 passing
    titles = alpha_vllm.locator(".strip .sq").evaluate_all("s => s.map(x => x.title)")
    assert titles == [
        "2025-02-21 to 2025-02-28: no result",
        "2025-03-01 to 2025-03-02: fail",
        "2025-03-03 to 2025-03-06: pass",
    ]
    page.screenshot(path=str(ARTIFACTS / "matrix.png"), full_page=True)
    assert page.alerts == [] and page.console_errors == []


def test_hover_shows_why_a_cell_fails(page, server):
    page.goto(server + "/")
    cell = page.locator('tr[data-model="org/beta"] td[data-engine="transformers"]')
    why = cell.locator(".why")
    assert not why.is_visible()
    cell.hover()
    assert why.is_visible()
    text = why.inner_text()
    assert "unsupported_architecture" in text and XSS in text  # shown as text, not markup
    page.screenshot(path=str(ARTIFACTS / "matrix-hover.png"))
    assert page.alerts == []


def test_filter_by_engine_and_status(page, server):
    page.goto(server + "/")
    with page.expect_navigation():
        page.select_option('select[name="status"]', "fail")
    assert "status=fail" in page.url
    assert rows(page) == ["org/beta"]
    with page.expect_navigation():
        page.select_option('select[name="status"]', "")
    with page.expect_navigation():
        page.select_option('select[name="engine"]', "vllm")
    assert rows(page) == ["old/gamma", "org/alpha"]
    assert page.locator("thead th[data-engine]").evaluate_all(
        "hs => hs.map(h => h.getAttribute('data-engine'))"
    ) == ["vllm"]
    page.screenshot(path=str(ARTIFACTS / "matrix-filtered.png"), full_page=True)


def test_open_a_cell_shows_its_log_in_a_dialog_then_its_page(page, server):
    page.goto(server + "/")
    page.locator('tr[data-model="org/beta"] td[data-engine="transformers"] a.open').click()
    dialog = page.locator("dialog#cell-dialog")
    dialog.wait_for(state="visible")
    text = dialog.inner_text()
    assert "Log excerpt" in text and XSS in text and "dayone probe org/beta" in text
    page.screenshot(path=str(ARTIFACTS / "cell-dialog.png"))
    dialog.get_by_text("Full history").click()
    page.wait_for_url("**/cells/org/beta/transformers")
    assert page.locator("pre.log").first.is_visible()
    page.screenshot(path=str(ARTIFACTS / "cell.png"), full_page=True)
    assert page.alerts == [] and page.console_errors == []
    # its links lead on: the model page, its badge image renders
    page.locator("h1 a").first.click()
    page.wait_for_url("**/models/org/beta")
    assert page.locator("img").first.evaluate("i => i.complete && i.naturalWidth > 0")


def test_the_static_export_filters_in_the_page(page, db_url, tmp_path):
    from service.export import export

    out = tmp_path / "site"
    export(out, db_url)
    page.goto((out / "index.html").as_uri())
    assert rows(page) == ["org/beta", "old/gamma", "org/alpha"]
    page.select_option('select[name="family"]', "llama")
    assert rows(page) == ["org/alpha"]
    page.select_option('select[name="family"]', "")
    page.select_option('select[name="status"]', "error")
    assert rows(page) == ["old/gamma"]
    page.screenshot(path=str(ARTIFACTS / "export-filtered.png"), full_page=True)
    page.select_option('select[name="status"]', "")
    page.locator('tr[data-model="org/alpha"] th a').click()
    page.wait_for_url("**/models/org/alpha.html")
    page.locator('a[href$="cells/org/alpha/vllm.html"]').first.click()
    page.wait_for_url("**/cells/org/alpha/vllm.html")
    assert "0.8.1" in page.inner_text("body")
    page.locator("header a.brand").click()
    page.wait_for_url("**/index.html")
    assert page.alerts == []


# The architecture map


@pytest.fixture(scope="module")
def map_server(tmp_path_factory):
    from test_map_page import map_records

    with serving(filled_store(tmp_path_factory.mktemp("browser-map"), map_records())) as base:
        yield base


def map_rows(pg) -> list[str]:
    return pg.locator("table#map tr[data-arch]:visible").evaluate_all(
        "rs => rs.map(r => r.getAttribute('data-arch'))"
    )


def test_the_map_filters_from_the_keyboard_and_leads_to_a_cell(page, map_server):
    page.goto(map_server + "/")
    page.locator("header nav").get_by_text("architecture map").click()
    page.wait_for_url("**/map")
    assert page.title().startswith("Architecture map")
    assert map_rows(page) == ["gpt_oss", "llama", "qwen3"]
    assert page.locator('figure.plot[data-engine="vllm"] svg polyline').count() == 1
    page.screenshot(path=str(ARTIFACTS / "map.png"), full_page=True)
    # Type a name and press Enter: the GET form, no script needed.
    page.locator('#map-filters input[name="q"]').fill("qwen")
    with page.expect_navigation():
        page.locator('#map-filters input[name="q"]').press("Enter")
    assert "q=qwen" in page.url and map_rows(page) == ["qwen3"]
    qwen_vllm = page.locator('tr[data-arch="qwen3"] td[data-engine="vllm"]')
    assert "generate error" in qwen_vllm.inner_text()
    assert qwen_vllm.locator("ol.timeline li").evaluate_all("ls => ls.map(l => l.title)") == [
        "0.8.0: pass",
        "0.9.0: error",
    ]
    page.screenshot(path=str(ARTIFACTS / "map-filtered.png"), full_page=True)
    # Tab to the cell's link and follow it with the keyboard.
    link = qwen_vllm.locator("a.cell-link")
    link.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/cells/arch/qwen3/vllm")
    assert "harness bug" in page.inner_text("body")
    assert page.alerts == [] and page.console_errors == []


def test_the_map_reads_on_a_phone(browser, map_server):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    pg = context.new_page()
    pg.goto(map_server + "/map")
    # The page itself does not scroll sideways; the table does, inside its frame.
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    wrap = pg.locator(".map-wrap").first
    assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
    pg.screenshot(path=str(ARTIFACTS / "map-phone.png"), full_page=True)
    context.close()


def test_the_exported_map_filters_in_the_page(page, tmp_path):
    from service.export import export
    from test_map_page import map_records

    export(tmp_path / "site", filled_store(tmp_path, map_records()))
    page.goto((tmp_path / "site" / "map.html").as_uri())
    assert map_rows(page) == ["gpt_oss", "llama", "qwen3"]
    page.select_option('select[name="lineage"]', "synthetic")
    assert map_rows(page) == ["gpt_oss"]
    page.select_option('select[name="lineage"]', "")
    page.locator('#map-filters input[name="q"]').fill("meta-llama")
    page.locator('#map-filters input[name="q"]').press("Enter")
    assert map_rows(page) == ["llama"]
    page.screenshot(path=str(ARTIFACTS / "export-map-filtered.png"), full_page=True)
    page.locator('tr[data-arch="llama"] td[data-engine="vllm"] a.cell-link').click()
    page.wait_for_url("**/cells/arch/llama/vllm.html")
    assert page.alerts == []


# One architecture's page, the map's hardware filter, the header's search box


@pytest.fixture(scope="module")
def arch_server(tmp_path_factory):
    from test_arch_page import arch_records

    url = filled_store(tmp_path_factory.mktemp("browser-arch"), arch_records())
    with serving(url) as base:
        yield base, url


def test_the_arch_page_shows_stages_releases_and_reds(page, arch_server):
    base, _ = arch_server
    page.goto(base + "/map")
    page.locator('tr[data-arch="llama"] a.arch-link').click()
    page.wait_for_url("**/map/llama")
    assert page.title().startswith("llama on the map")
    assert "shrunk from meta-llama/Llama-3.2-1B" in page.inner_text("dl.kv")
    sglang = page.locator('table#arch tr[data-engine="sglang"]')
    assert sglang.locator('td[data-stage="load"]').inner_text().split() == [
        "✗",
        "fail",
        "unsupported_architecture",
    ]
    assert "broken since sglang 0.5.0; last green 0.4.0" in sglang.inner_text()
    assert sglang.locator("ol.timeline li").evaluate_all("ls => ls.map(l => l.title)") == [
        "0.4.0: pass",
        "0.5.0: fail",
    ]
    assert (
        page.locator('table#arch tr[data-engine="vllm"] td[data-stage="convert"]').inner_text() == "not run"
    )
    red = page.locator('li.red[data-engine="sglang"]')
    assert "confirmed bare" in red.inner_text() and XSS in red.inner_text()  # text, not markup
    assert "bare_load.py" in red.locator("pre.reproduce").inner_text()
    page.screenshot(path=str(ARTIFACTS / "arch.png"), full_page=True)
    assert page.alerts == [] and page.console_errors == []
    # The red's record, as JSON (where the browser asks for a /favicon.ico: a 404 it logs)
    with page.expect_navigation():
        red.locator("a.record").click()
    assert '"reproduce"' in page.inner_text("body") and "bare_load.py" in page.inner_text("body")
    page.go_back()
    # An architecture the store does not know: a 404 page that leads back to the map (the
    # browser logs the 404 itself as a console error).
    response = page.goto(base + "/map/no_such_arch")
    assert response.status == 404 and "No such architecture" in page.inner_text("h1")
    page.screenshot(path=str(ARTIFACTS / "arch-404.png"))
    page.get_by_text("See the architecture map").click()
    page.wait_for_url("**/map")
    assert page.alerts == [] and all("404" in e for e in page.console_errors)


def test_the_map_filters_by_hardware_with_and_without_script(browser, page, arch_server):
    base, _ = arch_server
    page.goto(base + "/map")
    with page.expect_navigation():  # JS on: choosing asks the server at once
        page.select_option('select[name="hardware"]', "NVIDIA H200")
    assert "hardware=NVIDIA+H200" in page.url and map_rows(page) == ["llama"]
    cell = page.locator('tr[data-arch="llama"] td[data-engine="sglang"]')
    assert cell.get_attribute("data-status") == "pass"
    page.screenshot(path=str(ARTIFACTS / "map-hardware.png"), full_page=True)
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(base + "/map")
    pg.select_option('select[name="tier"]', "full")
    with pg.expect_navigation():  # JS off: the form's button
        pg.locator("#map-filters button[type=submit]").click()
    assert "tier=full" in pg.url and map_rows(pg) == ["llama"]
    context.close()


def test_the_search_box_from_the_keyboard(page, arch_server):
    base, _ = arch_server
    page.goto(base + "/")
    # The box is labelled and comes early in the focus order (after the header's links).
    box = page.get_by_label("Search models and architectures")
    order = page.evaluate("""() => Array.from(document.querySelectorAll('a, input, button, select'))
        .filter(e => e.offsetParent !== null).map(e => e.id || e.tagName)""")
    assert order.index("site-search-q") < order.index("SELECT")
    box.focus()
    page.keyboard.type("qwen3")
    results = page.locator("#site-search-results a")
    results.first.wait_for(state="visible")
    assert results.evaluate_all("as => as.map(a => a.textContent)") == ["qwen3", "Qwen/Qwen3-4B"]
    assert "2 matches" in page.locator("#site-search-results .search-status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "search-box.png"))
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent") == "qwen3"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.textContent") == "Qwen/Qwen3-4B"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Escape")
    assert page.locator("#site-search-results").is_hidden()
    assert page.evaluate("document.activeElement.id") == "site-search-q"
    page.keyboard.press("ArrowDown")  # the list comes back with a new query only
    box.fill("qwen3")
    results.first.wait_for(state="visible")
    page.keyboard.press("ArrowDown")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url("**/map/qwen3")
    # Enter in the box itself: the search page, whose results are links.
    box = page.get_by_label("Search models and architectures")
    box.fill("Qwen3-4B")
    with page.expect_navigation():
        box.press("Enter")
    assert "/search?q=Qwen3-4B" in page.url
    page.locator("#search-list a").first.click()
    page.wait_for_url("**/models/Qwen/Qwen3-4B")
    assert "supported since vllm 0.8.0" in page.locator("section.arch-tier").inner_text()
    page.screenshot(path=str(ARTIFACTS / "model-arch-tier.png"), full_page=True)
    assert page.alerts == [] and page.console_errors == []


def test_the_search_box_without_script_and_in_the_export(browser, arch_server, tmp_path):
    from service.export import export

    base, url = arch_server
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(base + "/map/llama")
    pg.get_by_label("Search models and architectures").fill("mamba")
    with pg.expect_navigation():
        pg.get_by_label("Search models and architectures").press("Enter")
    assert pg.locator("#search-list a").evaluate_all("as => as.map(a => a.textContent)") == ["mamba"]
    pg.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)
    context.close()
    export(tmp_path / "site", url)
    pg = browser.new_page()
    pg.goto((tmp_path / "site" / "map" / "llama.html").as_uri())
    pg.get_by_label("Search models and architectures").fill("qwen")
    with pg.expect_navigation():
        pg.get_by_label("Search models and architectures").press("Enter")
    shown = pg.locator("#search-list li:visible a").evaluate_all("as => as.map(a => a.textContent)")
    assert shown == ["Qwen/Qwen3-4B", "qwen3"]
    pg.screenshot(path=str(ARTIFACTS / "export-search.png"), full_page=True)
    pg.locator("#search-list li:visible a").last.click()
    pg.wait_for_url("**/map/qwen3.html")
    assert "qwen3" in pg.inner_text("h1")
    pg.close()
