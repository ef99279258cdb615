"""``advgrid report``: a tiny study's page, checked as text and opened in headless Chromium.

The browser cases drive Debian's chromium through its chromedriver (``.ci/install-chromium``,
which ``make test`` runs, installs both); without them they skip, except under CI (``CI``
set), where they fail. ``ADVGRID_REPORT_SCREENSHOT=PATH`` saves a full-page screenshot.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from markupsafe import escape

from orchestrator.report import data as report_data
from orchestrator.report import environment
from orchestrator.report import page as report_html
from orchestrator.views.transfer import Entry, Matrix
from storage import Database, NewCell
from tests.conftest import Cli, data_env, tiny_study

EVIL_MODEL = '<img src=x onerror="alert(1)">'
EVIL_ERROR = "ValueError: <script>boom()</script> & co"
DESCRIPTION = "Tiny <b>grid</b> & friends"
INSTALL_HINT = ".ci/install-chromium (run by `make test`) installs chromium and chromium-driver"


@dataclasses.dataclass(frozen=True)
class Made:
    root: Path
    env: dict[str, str]
    study: Path
    page: Path
    output: str

    @property
    def html(self) -> str:
        return self.page.read_text()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """The tiny study run inline, one quarantined cell added, and its report written."""
    root = tmp_path_factory.mktemp("report")
    env = data_env(root)
    study = tiny_study(root / "tiny.yaml")
    study.write_text(study.read_text() + f'description: "{DESCRIPTION}"\n')
    ran = Cli()("run", study, "--executor", "inline", env=env)
    assert ran.exit_code == 0, ran.output
    _add_quarantined_cell(env["ADVGRID_DB"])
    page = root / "report.html"
    result = Cli()("report", study, "-o", page, env=env)
    assert result.exit_code == 0, result.output
    return Made(root, env, study, page, result.output)


def _add_quarantined_cell(db_url: str) -> None:
    """An attack cell of a model whose name is markup, failed with an error that is too."""
    db = Database.open(db_url)
    study = db.get_study("tiny")
    spec = json.loads(db.cells(study.id, kind="attack")[0].spec_json) | {"source": EVIL_MODEL}
    key = "f" * 64
    db.add_cells(study.id, [NewCell(key, "attack", json.dumps(spec, sort_keys=True))])
    (claimed,) = db.claim(study.id, "test:0:x", 1, 60.0, 1, keys={key})
    error = f"Traceback (most recent call last):\n  ...\n{EVIL_ERROR}"
    assert db.fail(claimed.id, claimed.token, error=error, worker="test", max_attempts=1)


def test_report_writes_one_page(made: Made) -> None:
    assert f"wrote {made.page} (" in made.output
    assert made.page.stat().st_size == len(made.html.encode())
    assert not list(made.root.glob(".report.html.*"))  # no temporary file left behind


class _References(HTMLParser):
    """Every URL-valued attribute of every element (``src``, ``href``, ``xlink:href``…)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.split(":")[-1] in ("src", "href", "srcset", "action", "poster", "data"):
                self.found.append((tag, name, value or ""))


def test_page_is_self_contained(made: Made) -> None:
    parser = _References()
    parser.feed(made.html)
    assert {tag for tag, _, _ in parser.found} >= {"img", "a", "use"}  # the parser sees them
    outside = [r for r in parser.found if not r[2].startswith(("data:image/png;base64,", "#"))]
    assert outside == []
    # CSS and SVG point only inside the page; no absolute URL but the SVG namespace names
    assert re.search(r"url\(#", made.html)
    pattern = r"""url\(\s*['"]?(?!#)|@import|https?://(?!www\.w3\.org/)"""
    assert not re.search(pattern, made.html, re.IGNORECASE)
    assert f'content="{escape(report_html.CSP)}"' in made.html


def test_user_text_is_escaped(made: Made) -> None:
    html = made.html
    for raw in (EVIL_MODEL, "<script>", "<b>grid</b>"):
        assert raw not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "ValueError: &lt;script&gt;boom()&lt;/script&gt; &amp; co" in html
    assert "Tiny &lt;b&gt;grid&lt;/b&gt; &amp; friends" in html


def test_a_name_in_a_heatmap_is_escaped(made: Made) -> None:
    """The heatmap's SVG is the one piece inserted as markup: matplotlib must escape it."""
    report = _collect(made)
    entries: list[list[Entry | None]] = [[Entry(3, 4, "k"), None]]
    m = Matrix("digits", "pgd", {"eps": 0.1}, [EVIL_MODEL], [EVIL_MODEL, "mlp"], entries, "all")
    html = report_html.render(dataclasses.replace(report, matrices=[m]))
    assert EVIL_MODEL not in html
    section = html[html.index('id="transfer"') : html.index('id="curves"')]
    assert section.count("&lt;img src=x onerror=") >= 4  # table head, row head, two ticks
    assert "<svg" in section
    assert "75.0%" in section
    assert "[30.1, 95.4]" in section


def _collect(made: Made) -> report_data.Report:
    options = report_data.Options(
        db_url=made.env["ADVGRID_DB"], store_root=made.env["ADVGRID_STORE"], example_cells=0
    )
    return report_data.collect(Database.open(made.env["ADVGRID_DB"]), "tiny", options)


def test_sections_as_text(made: Made) -> None:
    report = _collect(made)
    assert report.counts["attack"] == {"done": 6, "quarantined": 1}
    assert [f.last_line for f in report.failures] == [EVIL_ERROR]
    assert [m.title() for m in report.matrices] == [
        "fgsm(eps=0.1, norm=linf) on digits",
        "pgd(eps=0.03137, norm=linf, steps=3) on digits",
    ]
    (eps,) = report.curve_tables
    assert (eps.axis, eps.xs) == ("eps", ["0", "0.03137", "0.1"])
    assert len(eps.rows) == 6
    assert len(report.attack_rows) == 7
    env = report.environment
    assert env.versions["torch"] == version("torch")
    assert {(c.model, c.origin) for c in env.checkpoints} == {
        (m, "trained") for m in ("cnn", "mlp", "mlp2")
    }
    assert all(re.fullmatch(r"[0-9a-f]{64}", c.digest) for c in env.checkpoints)
    assert [len(h) for h in env.eval_hashes.values()] == [1]


def test_denominator_and_no_examples(made: Made, cli: Cli) -> None:
    page = made.root / "all.html"
    result = cli(
        "report", "tiny", "-o", page, "--denominator", "all", "--examples", "0", env=made.env
    )
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "denominator all (every example)" in html
    assert "No done attack cells with stored examples." in html
    assert 'class="example' not in html


def test_output_into_a_missing_folder_is_an_error(made: Made, cli: Cli) -> None:
    target = made.root / "missing" / "report.html"
    result = cli("report", "tiny", "-o", target, env=made.env)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: -o {target}: no such folder {target.parent}; create it first or write elsewhere"
    )
    assert not target.parent.exists()


def test_unknown_study_is_an_error(made: Made, cli: Cli) -> None:
    result = cli("report", "nosuch", "-o", made.root / "x.html", env=made.env)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: no study named 'nosuch' in {made.env['ADVGRID_DB']}; known studies: tiny"
    )
    assert not (made.root / "x.html").exists()


def test_help_has_examples(cli: Cli) -> None:
    result = cli("report", "--help")
    assert result.exit_code == 0
    assert "Examples:\n    advgrid report quickstart -o report.html\n" in result.output


@pytest.mark.parametrize(
    ("shape", "mode", "size", "shown"),
    [
        ((1, 8, 8), "L", (8, 8), (72, 72)),  # enlarged (pixelated) to at least 72 pixels
        ((3, 32, 16), "RGB", (16, 32), (48, 96)),
        ((2, 10, 10), "L", (10, 10), (80, 80)),  # neither grey nor RGB: the channel mean
        ((3, 256, 512), "RGB", (128, 64), (128, 64)),  # shrunk to 128 on the long side
    ],
)
def test_png_uri(
    shape: tuple[int, int, int], mode: str, size: tuple[int, int], shown: tuple[int, int]
) -> None:
    import base64

    from PIL import Image

    uri = report_html.png_uri(torch.rand(shape))
    image = Image.open(io.BytesIO(base64.b64decode(uri.removeprefix("data:image/png;base64,"))))
    assert (image.mode, image.size) == (mode, size)
    assert report_html.display_size(shape[1], shape[2]) == shown


def test_git_commit(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not found")
    assert environment.git_commit(tmp_path) is None
    (tmp_path / "study.yaml").write_text("name: x\n")
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "."], [*ident, "commit", "-q", "-m", "x"]):
        subprocess.run([git, "-C", str(tmp_path), *args], check=True, capture_output=True)
    head = subprocess.run(
        [git, "-C", str(tmp_path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert environment.git_commit(tmp_path) == head
    (tmp_path / "study.yaml").write_text("name: y\n")
    assert environment.git_commit(tmp_path) == f"{head} + local changes"


# -- in a browser ------------------------------------------------------------------------------


def _browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver (Debian's first); skip, or fail under CI, if absent."""
    found = [
        p if Path(p).exists() else shutil.which(Path(p).name)
        for p in ("/usr/bin/chromium", "/usr/bin/chromedriver")
    ]
    if not all(found):
        _missing("chromium and chromedriver are needed to open the report: " + INSTALL_HINT)
    if importlib.util.find_spec("selenium") is None:
        _missing("selenium is needed to drive chromium: `pip install -e '.[dev]'` installs it")
    return str(found[0]), str(found[1])


def _missing(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI requires it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(made: Made) -> Iterator[Any]:
    """Headless Chromium showing the report (a file:// URL; no network needed)."""
    chromium, chromedriver = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        driver.set_window_size(1280, 1000)
        driver.get(made.page.as_uri())
        yield driver
    finally:
        driver.quit()


def _text(browser: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def test_browser_shows_the_transfer_tables(browser: Any) -> None:
    shape = browser.execute_script(
        """return Array.from(document.querySelectorAll('table.transfer')).map(t => [
             t.querySelectorAll('thead th').length,
             Array.from(t.querySelectorAll('tbody tr')).map(r => r.cells.length)])"""
    )
    assert shape == [[4, [4, 4, 4]], [4, [4, 4, 4]]]  # 3 sources × 3 targets, plus the heads
    cell = _text(browser, "table.transfer tbody td")
    assert re.fullmatch(r"\d{1,3}\.\d%\n\[\d+\.\d, \d+\.\d\]\nn=\d+", cell), cell


def test_browser_renders_the_figures(browser: Any) -> None:
    widths = browser.execute_script(
        """const w = s => Array.from(document.querySelectorAll(s))
             .map(e => e.getBoundingClientRect().width);
           return [w('#transfer .heatmap svg'), w('#curves .curve-plot svg')]"""
    )
    heatmaps, curves = widths
    assert (len(heatmaps), len(curves)) == (2, 2)  # fgsm and pgd
    assert all(w > 100 for w in heatmaps + curves), widths


def test_browser_renders_the_examples(browser: Any) -> None:
    images = browser.execute_script(
        """return Array.from(document.querySelectorAll('img.example:not(.fool-all)'))
             .map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])"""
    )
    assert len(images) == 6 * 6 * 3  # six attack cells, six samples, three images each
    assert all(done and natural == 8 and shown == 72 for done, natural, shown in images)
    assert (
        browser.execute_script("return document.querySelectorAll('img:not(.example)').length") == 0
    )


def test_browser_shows_the_per_sample_joins(browser: Any) -> None:
    rows = browser.execute_script(
        """return Array.from(document.querySelectorAll('#samples table.joins tbody tr'))
             .map(r => Array.from(r.cells).map(c => c.textContent.trim()))"""
    )
    assert len(rows) == 6  # three sources × two attacks
    for row in rows:
        histogram = [int(h) for h in row[5].split()]
        assert row[3] == "3"
        assert len(histogram) == 4
        assert sum(histogram) == int(row[4]) == 64
        assert row[6].startswith(f"{histogram[-1]} (")
    tiles = browser.execute_script(
        "return Array.from(document.querySelectorAll('img.fool-all')).map(i => i.naturalWidth)"
    )
    # up to eight examples that fool every target, for each set
    assert len(tiles) == sum(min(8, int(row[6].split()[0])) for row in rows) > 0
    assert set(tiles) == {8}


def test_browser_shows_text_as_text(browser: Any) -> None:
    assert EVIL_MODEL in _text(browser, "table.results")
    assert EVIL_ERROR in _text(browser, "table.failures")
    assert DESCRIPTION in _text(browser, "header")
    study = _text(browser, "pre.study-file")
    for line in ("name: tiny", "eps: 8/255", f'description: "{DESCRIPTION}"'):
        assert line in study
    environment = _text(browser, "#environment")
    assert f"torch {version('torch')}" in environment
    assert "not a git checkout" in environment


def test_browser_loads_nothing(browser: Any) -> None:
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_browser_screenshot(browser: Any, tmp_path: Path) -> None:
    """A full-page screenshot; also saved where ADVGRID_REPORT_SCREENSHOT says (for a person).

    Runs last in this module: it resizes the window to the page's height.
    """
    target = os.environ.get("ADVGRID_REPORT_SCREENSHOT") or str(tmp_path / "report.png")
    for _ in range(2):  # the page's height changes once the new width settles
        height, chrome = browser.execute_script(
            """return [document.documentElement.scrollHeight,
                       window.outerHeight - window.innerHeight]"""
        )
        browser.set_window_size(1280, int(height) + int(chrome))
    assert browser.execute_script(
        "return window.innerHeight >= document.documentElement.scrollHeight"
    )
    assert browser.save_screenshot(target)
    assert Path(target).stat().st_size > 10_000
