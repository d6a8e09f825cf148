"""Leaderboard: the static site (``consistbench leaderboard build``). Pages, JSON and CSV; escaping
of hostile names; verification levels; atomic, byte-identical builds; intervals and tie marks;
and the site in headless Chromium (Debian ``chromium`` + ``chromium-driver``; ``make test``
installs them when missing).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from consistbench.benchmark.errors import ConsistbenchError
from consistbench.leaderboard import tracks as T

# the shared submission and helpers, built once per session (a plugin, its asserts rewritten)
pytest.register_assert_rewrite("tests.leaderboard_fixtures")
pytest_plugins = ["tests.leaderboard_fixtures"]
from tests.leaderboard_fixtures import (  # noqa: E402
    TASK, meta, read_results, set_meta, set_responses, write_results)


XSS_NAME = '<script>window.__pwned = 1</script> "quoted" & <b>bold</b>'


FORMULA_NAME = '=HYPERLINK("https://evil.example/x","click me")'
FORMULA_SUBMITTER = "@SUM(1+1)"


@pytest.fixture(scope="session")
def submissions(tmp_path_factory, reproduced_submission) -> Path:
    """Three valid mini-track entries with different numbers: one reproduced, two above the
    plausibility bounds; one has a hostile name, one spreadsheet formulas as names."""
    root = tmp_path_factory.mktemp("lb-submissions")
    shutil.copytree(reproduced_submission, root / "a-random")
    for slug, respond in (("b-reference", lambda d: d["reference"]), ("c-empty", lambda d: "")):
        shutil.copytree(reproduced_submission, root / slug)
        (root / slug / "reproduction.json").unlink()  # for other responses: it would be stale
        set_responses(root / slug, respond)
    m = meta(root / "c-empty")
    m["model"]["name"] = XSS_NAME
    m["notes"] = "</p><script>window.__pwned = 2</script>"
    set_meta(root / "c-empty", m)
    m = meta(root / "b-reference")
    m["model"]["name"], m["submitter"]["name"] = FORMULA_NAME, FORMULA_SUBMITTER
    set_meta(root / "b-reference", m)
    return root


@pytest.fixture(scope="session")
def site(tmp_path_factory, submissions) -> Path:
    from consistbench.leaderboard.site import build_site

    out = tmp_path_factory.mktemp("lb-site") / "site"
    build_site(submissions, out)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_site_has_pages_json_csv_and_no_external_resources(site, submissions):
    files = _files(site)
    for name in ("index.html", "submit.html", "leaderboard.json", "leaderboard.csv", "submission.schema.json",
                 "models/a-random.html", "models/b-reference.html", "models/c-empty.html"):
        assert name in files, name
    for name, data in files.items():
        if name.endswith(".html"):
            text = data.decode()
            assert "http://" not in text.replace('href="https://example.org/tiny"', "").replace(
                'xmlns="http://www.w3.org/2000/svg"', "") and "<script src" not in text and "<link" not in text, name
    doc = json.loads(files["leaderboard.json"])
    rows = doc["tracks"][TASK]["rows"]
    expected = sorted(rows, key=lambda r: (-r["metrics"]["rougeL"], -r["metrics"]["rs"], r["slug"]))
    assert [r["slug"] for r in rows] == [r["slug"] for r in expected] and rows[0]["slug"] == "b-reference"
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["metrics"]["rougeL"] == pytest.approx(1.0)
    assert doc["tracks"]["consistency"]["rows"] == []
    assert doc["tracks"][TASK]["data_sha256"] == T.shipped_data_version()
    header, *lines = files["leaderboard.csv"].decode().splitlines()
    assert header.split(",")[:4] == ["task", "rank", "slug", "model"] and len(lines) == 3
    assert "em_how_to" in header and "rougeL_original" in header
    assert files["models/a-random.html"].count(b"<svg") == 2
    for f in (submissions / "b-reference").iterdir():  # each entry's own files ship with the site
        assert files[f"submissions/b-reference/{f.name}"] == f.read_bytes()
        assert f'href="../submissions/b-reference/{f.name}"'.encode() in files["models/b-reference.html"]
    assert T.shipped_data_version().encode() in files["index.html"]


def test_user_text_is_escaped(site):
    index = (site / "index.html").read_text()
    page = (site / "models/c-empty.html").read_text()
    for text in (index, page):
        assert "<script>window.__pwned" not in text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
        assert "<b>bold</b>" not in text
    assert "&lt;/p&gt;&lt;script&gt;window.__pwned = 2" in page
    csv_text = (site / "leaderboard.csv").read_text()
    assert XSS_NAME.replace('"', '""') in csv_text  # data files keep the text as it is


def test_csv_cells_that_start_a_formula_are_neutralised(site):
    import csv as csvmod

    rows = list(csvmod.DictReader((site / "leaderboard.csv").read_text().splitlines()))
    ref = next(r for r in rows if r["slug"] == "b-reference")
    assert ref["model"] == "'" + FORMULA_NAME and ref["submitter"] == "'" + FORMULA_SUBMITTER
    from consistbench.leaderboard.render import csv_text

    for bad in ("=1+1", "+1", "-1", "@A1", "\tx", "\rx"):
        assert csv_text(bad) == "'" + bad
    assert csv_text("SmolLM2 = small") == "SmolLM2 = small"
    # the pages and leaderboard.json keep the name as it is (escaped as text in HTML)
    doc = json.loads((site / "leaderboard.json").read_text())
    assert any(r["model"]["name"] == FORMULA_NAME for r in doc["tracks"][TASK]["rows"])


def test_site_shows_each_entrys_verification_level(site):
    doc = json.loads((site / "leaderboard.json").read_text())
    rows = {r["slug"]: r for r in doc["tracks"][TASK]["rows"]}
    assert rows["a-random"]["verification"] == "reproduced"
    rep = rows["a-random"]["reproduction"]
    assert rep["exact_matches"] == rep["docs"] > 0 and rep["verdict"] == "reproduced"
    assert rows["b-reference"]["verification"] == "needs reproduction"
    assert any("equal their reference" in x for x in rows["b-reference"]["implausible"])
    assert rows["c-empty"]["verification"] == "needs reproduction"  # all answers identical: EM 1.0
    index = (site / "index.html").read_text()
    assert index.count('data-col="verification" data-value="needs reproduction"') == 2
    assert index.count('data-col="verification" data-value="reproduced"') == 1
    page = (site / "models/a-random.html").read_text()
    assert f"{rep['exact_matches']} of {rep['docs']} responses identical" in page and 'id="reproduction-metrics"' in page
    assert (site / "submissions/a-random/reproduction.json").is_file()
    assert "Needs reproduction" in (site / "models/b-reference.html").read_text()
    assert "verification" in (site / "leaderboard.csv").read_text().splitlines()[0]


def test_build_refuses_a_symlinked_submission_directory(tmp_path, real_submission):
    from consistbench.leaderboard.site import build_site

    elsewhere = tmp_path / "elsewhere" / "private"
    shutil.copytree(real_submission, elsewhere)
    (tmp_path / "subs").mkdir()
    os.symlink(elsewhere, tmp_path / "subs" / "innocent")
    with pytest.raises(ConsistbenchError, match="symbolic link among the submissions"):
        build_site(tmp_path / "subs", tmp_path / "site")
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_rebuild_is_byte_identical(tmp_path, submissions, site):
    from consistbench.leaderboard.site import build_site

    again = tmp_path / "again"
    build_site(submissions, again)
    assert _files(again) == _files(site)
    build_site(submissions, again)  # over an existing site: replaced, still identical
    assert _files(again) == _files(site)


def test_build_is_atomic_and_refuses_foreign_directories(tmp_path, submissions, site):
    from consistbench.leaderboard.site import build_site

    out = tmp_path / "site"
    shutil.copytree(site, out)
    bad = tmp_path / "subs"
    shutil.copytree(submissions, bad)
    res = read_results(bad / "a-random")
    res["results"][TASK]["em,none"] = 0.5
    write_results(bad / "a-random", res)
    with pytest.raises(ConsistbenchError, match="submission 'a-random' is invalid: .*metric 'em'"):
        build_site(bad, out)
    assert _files(out) == _files(site)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site", "subs"]  # no temporary directory left
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ConsistbenchError, match="not a leaderboard site"):
        build_site(submissions, foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_rejects_an_unsafe_submission_directory_name(tmp_path, real_submission):
    from consistbench.leaderboard.site import build_site

    shutil.copytree(real_submission, tmp_path / "subs" / "Bad Name")
    with pytest.raises(ConsistbenchError, match="directory names use lower-case"):
        build_site(tmp_path / "subs", tmp_path / "site")


def test_table_shows_confidence_intervals_when_a_row_has_them(site):
    from consistbench.leaderboard.schema import RankingRow
    from consistbench.leaderboard.render import render_ranking_table

    row = RankingRow.model_validate(json.loads((site / "leaderboard.json").read_text())["tracks"][TASK]["rows"][0])
    row.ci = {"em": [0.25, 0.75]}
    html = str(render_ranking_table([row]))
    assert "[0.250, 0.750]" in html and html.count('class="ci"') == 1


@pytest.mark.slow
def test_ranking_has_group_bootstrap_intervals_and_tie_marks(site, submissions, real_submission, tmp_path):
    from consistbench.leaderboard.site import build_site

    doc = json.loads((site / "leaderboard.json").read_text())
    assert doc["intervals"]["n_resamples"] == 1000 and doc["intervals"]["unit"] == "group_id"
    rows = doc["tracks"][TASK]["rows"]
    for row in rows:
        for metric in ("rougeL", "bleu", "em", "rs", "bs", "em_paraphrase"):
            low, high = row["ci"][metric]
            assert low - 1e-12 <= row["metrics"][metric] <= high + 1e-12, (row["slug"], metric)
    assert rows[0]["vs_above"] is None and rows[0]["tied_with_above"] is None
    # reference answers (rougeL 1.0) against a random tiny model: a real difference, no tie
    assert rows[0]["slug"] == "b-reference" and rows[1]["tied_with_above"] is False
    assert rows[1]["vs_above"]["rougeL"]["significant"] and rows[1]["vs_above"]["rougeL"]["low"] > 0
    # two entries with the same responses: the second is marked as tied with the first
    root = tmp_path / "subs"
    for slug in ("x-first", "y-same"):
        shutil.copytree(real_submission, root / slug)
    build_site(root, tmp_path / "site")
    tied = json.loads((tmp_path / "site" / "leaderboard.json").read_text())["tracks"][TASK]["rows"]
    assert [r["tied_with_above"] for r in tied] == [None, True]
    assert tied[1]["vs_above"]["rougeL"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0,
                                             "significant": False}
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('<span class="tie" title=') == 1 and "not significantly different" in index
    body = (site / "index.html").read_text().split("<tbody>")[1]
    assert body.count('<span class="tie"') == sum(bool(r["tied_with_above"]) for r in rows)


# ---------------------------------------------------------------------------------------------
# In a real browser

@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "the browser test needs Debian's chromium and chromium-driver (make test installs them)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=opts)
    yield drv
    drv.quit()


def _order(browser, col: str) -> tuple[list[str], list[float]]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#track-{TASK} table.ranking tbody tr")
    slugs = [r.get_attribute("data-slug") for r in rows]
    values = [float(r.find_element(By.CSS_SELECTOR, f'td[data-col="{col}"]').get_attribute("data-value")) for r in rows]
    return slugs, values


@pytest.mark.browser
def test_site_in_headless_chromium(browser, site, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "index.html").as_uri())
    assert browser.execute_script("return window.__pwned === undefined")
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, f"#track-{TASK} td.name a")]
    assert XSS_NAME in names  # the hostile name is shown as text
    rows = json.loads((site / "leaderboard.json").read_text())["tracks"][TASK]["rows"]
    rank = {r["slug"]: r["rank"] for r in rows}
    before, _ = _order(browser, "rougeL")
    assert before == sorted(rank, key=rank.get)

    # a metric column whose descending order differs from the ranking (the entries disagree on some)
    def desc(col):
        return sorted(rank, key=lambda s: (-next(r for r in rows if r["slug"] == s)["metrics"][col], rank[s]))

    cols = [th.get_attribute("data-col") for th in
            browser.find_elements(By.CSS_SELECTOR, f'#track-{TASK} th.sortable[data-type="number"]')]
    col = next(c for c in cols if c not in ("rank", "parameters") and desc(c) != before)
    header = browser.find_element(By.CSS_SELECTOR, f'#track-{TASK} th[data-col="{col}"]')
    header.click()
    slugs, values = _order(browser, col)
    assert slugs == desc(col) and slugs != before  # descending, ties by rank
    assert values == sorted(values, reverse=True) and header.get_attribute("aria-sort") == "descending"
    header.click()
    slugs, values = _order(browser, col)
    assert values == sorted(values) and header.get_attribute("aria-sort") == "ascending"
    browser.save_screenshot(str(tmp_path / "index.png"))

    browser.find_element(By.CSS_SELECTOR, f'#track-{TASK} tr[data-slug="c-empty"] td.name a').click()
    WebDriverWait(browser, 10).until(EC.title_contains("consistbench leaderboard"))
    assert browser.current_url.endswith("/models/c-empty.html")
    assert browser.find_element(By.TAG_NAME, "h1").text == XSS_NAME
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    assert browser.execute_script("return window.__pwned === undefined")
    shot = tmp_path / "model.png"
    browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    width, height = struct.unpack(">II", png[16:24])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width >= 800 and height >= 600
    print(f"screenshots kept in {tmp_path}")
