"""The rendered book, opened in a real browser (headless Chromium driven by Playwright).

Every chapter is executed once per test session with its CI parameters
(``scripts/run_chapters.py``, shared with ``tests/test_book.py``); a temporary copy of the book
whose chapter pages are those executed notebooks is built with execution off, and every page of
it is visited from disk with all network requests refused. Checked on each page: no error output
or traceback, every image loaded, every audio player has decodable audio, every widget's state
was saved with the page and the widget manager draws it, every formula is typeset by MathJax,
nothing was asked of the network and no file failed to load (the pages' JavaScript is served
from ``_vendor/``, see ``scripts/vendor_js.py``), every exercise's solution is hidden until its
toggle is clicked, and a chapter's Colab button opens that chapter's notebook. Screenshots go to
``_build/screenshots/`` for a human to review.

Chromium is Debian's (``/usr/bin/chromium``), never a browser downloaded by Playwright.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from scriptload import load_script

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "_build" / "screenshots"
# Headless, sandbox-free (containers), and every background network feature off.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-zygote", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-domain-reliability", "--disable-breakpad",
    "--no-first-run", "--no-pings", "--metrics-recording-only",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
]


runner = load_script("run_chapters")
notebooks = runner.notebooks
vendor_js = load_script("vendor_js")


def _pages(root: Path) -> list[str]:
    """Every page of the toc (``book/intro``, ``book/01_data``, ...), in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [toc["root"], *notebooks._toc_entries(
        {k: v for k, v in toc.items() if k in ("chapters", "parts")})]


def _book_copy(target: Path, executed: Path) -> Path:
    """A copy of the book whose chapters are the executed notebooks; execution off."""
    config = notebooks.config(ROOT)
    config["execute"]["execute_notebooks"] = "off"
    config["exclude_patterns"] = [p for p in config["exclude_patterns"] if p != "book/*.ipynb"]
    (target / "book").mkdir(parents=True)
    (target / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "_toc.yml", target / "_toc.yml")
    chapters = {c.stem for c in notebooks.chapters(ROOT)}
    for page in _pages(ROOT):
        stem = Path(page).name
        dest = target / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        if stem in chapters:
            shutil.copy(executed / f"{stem}.ipynb", dest.with_suffix(".ipynb"))
        else:
            shutil.copy((ROOT / page).with_suffix(".md"), dest.with_suffix(".md"))
            if (ROOT / page).with_suffix(".ipynb").exists():  # an assignment's Colab copy
                shutil.copy((ROOT / page).with_suffix(".ipynb"), dest.with_suffix(".ipynb"))
    for extra in ("book/references.bib",):
        shutil.copy(ROOT / extra, target / extra)
    (target / "_vendor").symlink_to(vendor_js.vendor(), target_is_directory=True)
    return target


def _build(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("jupyter-book")
    env = {**os.environ, "SPEECHUL_QUIET": "1"}
    return subprocess.run([str(exe), "build", str(root), "--all"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


def _expected(notebook: Path) -> dict[str, int]:
    """What the executed notebook's outputs promise the page will show (cells tagged
    ``remove-cell``, such as the appended exercise solutions, are not on the page)."""
    nb = json.loads(notebook.read_text())
    counts = {"audio": 0, "widgets": 0, "figures": 0}
    for cell in nb["cells"]:
        if "remove-cell" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            counts["audio"] += "<audio" in "".join(data.get("text/html", ""))
            counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
            counts["figures"] += "image/png" in data or "image/svg+xml" in data
    return counts


# JavaScript run in each page: facts the checks need, gathered in one round trip.
_FACTS = """async () => {
  const until = async (done, ms) => {
    for (const t0 = Date.now(); !done() && Date.now() - t0 < ms;) {
      await new Promise((ok) => setTimeout(ok, 100));
    }
  };
  const viewScripts = 'script[type="application/vnd.jupyter.widget-view+json"]';
  const topWidgets = () => Array.from(document.querySelectorAll('.jupyter-widgets'))
    .filter((w) => !w.parentElement.closest('.jupyter-widgets'));
  const views = document.querySelectorAll(viewScripts).length;
  await until(() => topWidgets().length >= views, 20000);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const wait = (el) => new Promise((ok) => {
    if (el.readyState >= 1) return ok();
    el.addEventListener('loadedmetadata', ok, {once: true});
    el.addEventListener('error', ok, {once: true});
    el.load(); setTimeout(ok, 5000);
  });
  const audios = Array.from(document.querySelectorAll('audio'));
  await Promise.all(audios.map(wait));
  const text = document.body.innerText;
  return {
    brokenImages: Array.from(document.images)
      .filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.src.slice(0, 80)),
    images: document.images.length,
    figures: document.querySelectorAll('.cell_output img').length,
    audio: audios.map((a) => ({duration: a.duration, error: a.error && a.error.code})),
    errors: document.querySelectorAll('.output.traceback, .output.error, .output.stderr').length,
    traceback: text.includes('Traceback (most recent call last)'),
    widgetViews: views,
    widgetsDrawn: topWidgets().length,
    widgetErrors: document.querySelectorAll('.jupyter-widgets-error-widget').length
      + (text.includes('Error rendering Jupyter widget') ? 1 : 0),
    math: document.querySelectorAll('.math').length,
    mathRaw: Array.from(document.querySelectorAll('.math'))
      .filter((m) => !m.querySelector('mjx-container')).map((m) => m.textContent.slice(0, 60)),
    mathErrors: document.querySelectorAll('mjx-merror').length,
    widgetState: Array.from(document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-state+json"]')).map((s) => s.textContent),
    viewModels: Array.from(document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'))
      .map((s) => JSON.parse(s.textContent).model_id),
    links: Array.from(document.querySelectorAll('a[href]')).map((a) => a.href),
  };
}"""


def _check_solutions(page, name: str) -> int:
    """Each solution's body is hidden, and shown once its toggle is clicked."""
    solutions = page.locator("div.solution")
    for i in range(solutions.count()):
        solution = solutions.nth(i)
        body = solution.locator(":scope > :not(.admonition-title)").first
        assert body.count() == 1, f"{name}: solution {i + 1} is empty"
        assert not body.is_visible(), f"{name}: solution {i + 1} is visible before opening"
        solution.locator("button.toggle-button").first.click()
        body.wait_for(state="visible", timeout=5000)
    return solutions.count()


def _visit(page, html: Path, name: str, expected: dict[str, int] | None) -> dict:
    refused: list[str] = []
    failed: list[str] = []
    def on_failed(request) -> None:
        failed.append(request.url)

    page.on("requestfailed", on_failed)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
        ("file:", "data:", "blob:")) else (refused.append(route.request.url), route.abort()))
    page.goto(html.as_uri(), wait_until="load")
    facts = page.evaluate(_FACTS)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert facts["errors"] == 0 and not facts["traceback"], f"{name}: error output in the page"
    assert not facts["brokenImages"], f"{name}: images that did not load {facts['brokenImages']}"
    for i, audio in enumerate(facts["audio"]):
        assert audio["error"] is None and audio["duration"] > 0, (
            f"{name}: audio player {i + 1} has no playable data ({audio})")
    if expected is not None:
        assert len(facts["audio"]) >= expected["audio"], f"{name}: audio players missing"
        assert facts["widgetViews"] >= expected["widgets"], f"{name}: widgets missing"
        assert facts["figures"] >= expected["figures"], f"{name}: figures missing"
    if facts["widgetViews"]:
        state = json.loads(facts["widgetState"][0]) if facts["widgetState"] else {}
        models = state.get("state", {})
        lost = [m for m in facts["viewModels"] if m not in models]
        assert not lost, f"{name}: widgets without saved state {lost}"
    # Drawn by the widget manager served from _vendor/, from the saved state alone.
    assert facts["widgetsDrawn"] >= facts["widgetViews"] and not facts["widgetErrors"], (
        f"{name}: {facts['widgetsDrawn']} of {facts['widgetViews']} widgets drawn, "
        f"{facts['widgetErrors']} errors")
    assert not facts["mathRaw"] and not facts["mathErrors"], (
        f"{name}: math MathJax did not typeset {facts['mathRaw'][:3]}")
    facts["solutions"] = _check_solutions(page, name)
    page.unroute("**/*")
    page.remove_listener("requestfailed", on_failed)
    failed = [url for url in failed if url not in refused]
    # Everything a page needs is in the book: nothing asked of the network, nothing missing.
    assert not refused, f"{name}: the page asked the network for {refused[:3]}"
    assert not failed, f"{name}: files the page could not load {failed[:3]}"
    return facts


def _visit_fresh(browser, html: Path, name: str, expected: dict[str, int] | None) -> dict:
    """``_visit`` in a page of its own; a renderer crash is retried once in a new page.

    A crashed renderer process ("Target crashed") says nothing about the book (it happened once
    in CI on a page that passes every other run); the retry checks everything again, so a page
    that crashes the browser every time still fails, and a crash that was retried is reported.
    """
    from playwright.sync_api import Error

    try:
        return _visit_in_new_page(browser, html, name, expected)
    except Error as error:
        if "crashed" not in str(error).lower():
            raise
        warnings.warn(f"{name}: the browser's renderer crashed ({error}); retried once",
                      stacklevel=1)
    return _visit_in_new_page(browser, html, name, expected)


def _visit_in_new_page(browser, html: Path, name: str, expected: dict[str, int] | None) -> dict:
    from playwright.sync_api import Error

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        return _visit(page, html, name, expected)
    finally:
        with contextlib.suppress(Error):  # closing a crashed page may itself fail
            page.close()


def _browser(playwright):
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the browser test needs Debian's Chromium "
        "(apt-get install chromium); Playwright's own browser download is not used")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                      args=CHROMIUM_ARGS)


def test_chromium_is_installed_and_launches():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.set_content("<p id='x'>ok</p>")
        assert page.inner_text("#x") == "ok"
        browser.close()


@pytest.mark.book
@pytest.mark.timeout(2400)  # run alone, it first executes every chapter itself
def test_rendered_book_in_chromium(chapter_runs, tmp_path):
    from playwright.sync_api import sync_playwright

    chapters = [c for c in notebooks.chapters(ROOT) if c.exists()]
    for chapter in chapters:
        outcome = runner.execute_once(chapter, chapter_runs)
        assert outcome.status == "ok", f"{chapter.name} failed: {outcome.error}"
    book = _book_copy(tmp_path / "book", chapter_runs)
    done = _build(book)
    assert done.returncode == 0, f"build failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    html = book / "_build" / "html"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url, branch = notebooks.repository(ROOT)
    github = url.removeprefix("https://github.com/")
    stems = {c.stem for c in chapters}
    with sync_playwright() as p:
        browser = _browser(p)
        seen = {}
        for entry in _pages(ROOT):
            name = Path(entry).name
            expected = _expected(chapter_runs / f"{name}.ipynb") if name in stems else None
            seen[name] = _visit_fresh(browser, html / f"{entry}.html", name, expected)
            if (ROOT / entry).with_suffix(".ipynb").exists():  # chapters and assignments
                colab = (f"https://colab.research.google.com/github/{github}/blob/{branch}/"
                         f"{entry}.ipynb")
                assert colab in seen[name]["links"], f"{name}: no Colab button to {colab}"
            if name in stems:
                assert seen[name]["solutions"] >= 3, f"{name}: fewer than 3 solutions"
        browser.close()
    assert sum(len(f["audio"]) for f in seen.values()) > 0, "no audio player anywhere"
    assert sum(f["widgetsDrawn"] for f in seen.values()) > 0, "no widget drawn anywhere"
    assert sum(f["math"] for f in seen.values()) > 0, "no typeset math anywhere"
    figures = {name: f["figures"] for name, f in seen.items() if name in stems}
    assert all(figures.values()), f"chapters without a figure (matplotlib backend?): {figures}"


@pytest.fixture(scope="session")
def chapter_runs(tmp_path_factory) -> Path:
    """The session's folder of executed chapters (shared with tests/test_book.py by path)."""
    return tmp_path_factory.getbasetemp() / "chapter-runs"


def test_a_renderer_crash_is_retried_once_in_a_new_page(monkeypatch):
    """A real renderer crash (chrome://crash) on the first visit: retried, warned; twice: fails."""
    from playwright.sync_api import Error, sync_playwright

    visits: list[int] = []

    def crash_first(page, html, name, expected, crashes: int):
        visits.append(1)
        if len(visits) <= crashes:
            with contextlib.suppress(Error):  # the navigation itself is aborted
                page.goto("chrome://crash")
        page.evaluate("1")  # "Target crashed" once the renderer is gone
        return {"visit": len(visits)}

    with sync_playwright() as p:
        browser = _browser(p)
        monkeypatch.setattr(sys.modules[__name__], "_visit",
                            lambda *a: crash_first(*a, crashes=1))
        with pytest.warns(UserWarning, match="renderer crashed"):
            assert _visit_fresh(browser, Path("x.html"), "x", None) == {"visit": 2}
        visits.clear()
        monkeypatch.setattr(sys.modules[__name__], "_visit",
                            lambda *a: crash_first(*a, crashes=2))
        with pytest.warns(UserWarning), pytest.raises(Error, match="rash"):
            _visit_fresh(browser, Path("x.html"), "x", None)
        browser.close()
