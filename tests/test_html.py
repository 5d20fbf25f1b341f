"""The HTML report, made by real pytest runs and the command, opened in headless Chromium."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import EVERY_ROW, run_cli

vl_convert = pytest.importorskip("vl_convert", reason="the [html] extra is not installed")

SUITE = """
    import os, pytest
    SLOW = float(os.environ.get("SLOW", "1"))
    NOISE = [1.0, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97, 1.0, 1.02, 0.98, 1.01]
    RUN = int(os.environ.get("RUN", "0"))

    @pytest.mark.userflow("Login")
    @pytest.mark.parametrize("user", ["ada", "bob"])
    def test_login(record_measurement, user):
        record_measurement("Login Time", 100 * SLOW * NOISE[RUN % 11], units="ms")
        record_measurement("Screen", "home")

    @pytest.mark.userflow("Search")
    def test_search(record_measurement):
        record_measurement("Search Time", 50 * SLOW * NOISE[(RUN + 3) % 11], units="ms")

    @pytest.mark.userflow("Login")
    @pytest.mark.userflow_budget("Size", max=50)
    def test_size(record_measurement):
        record_measurement("Size", float(os.environ.get("SIZE", "40")), units="MB")
"""

#: Chromium as root in a closed network: no sandbox, no GPU, and none of its own traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Page:
    """A report opened in the browser, with everything it logged and asked for."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 1400})
        self.messages: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.evaluate("window.userflowReady")

    def points(self) -> dict[str, int]:
        """Each drawn chart's points, by its flow and key."""
        return self.page.evaluate("""() => Object.fromEntries(
            [...document.querySelectorAll("section.key")]
              .filter(s => window.userflowViews[s.id])
              .map(s => [s.dataset.flow + "/" + s.dataset.key,
                         window.userflowViews[s.id].data("points").length]))""")

    def inked(self) -> list[int]:
        """How many pixels of each chart's canvas are not white."""
        return self.page.evaluate("""() => [...document.querySelectorAll(".plot canvas")].map(c => {
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 700) n++;
            return n; })""")


def build_history(pytester: pytest.Pytester, monkeypatch, *extra: str) -> Any:
    """Eight steady runs, then three 30% slower with the gate on (warning: a failed test's
    values are no point of a trend); the last breaks a budget."""
    pytester.makepyfile(SUITE)
    for run in range(11):
        monkeypatch.setenv("RUN", str(run))
        monkeypatch.setenv("SLOW", "1.3" if run >= 8 else "1")
        monkeypatch.setenv("SIZE", "60" if run == 10 else "40")
        gate = ["--userflow-baseline", "local", "--userflow-regression-mode", "warn"]
        gate = gate if run >= 6 else []
        result = pytester.runpytest(*gate, *(extra if run == 10 else ()))
    return result


def test_the_run_writes_a_report_that_draws_the_store(
    pytester: pytest.Pytester, store_path: Path, history, monkeypatch, browser, tmp_path: Path
) -> None:
    result = build_history(pytester, monkeypatch, "--userflow-html", "report.html")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["HTML report: */report.html (4 key(s), * KB)"])
    page = Page(browser, pytester.path / "report.html")
    assert page.messages == []
    assert all(url.startswith("file://") for url in page.requests), page.requests
    # one chart per numeric key, a point per value the store holds; text is listed, not drawn
    expected = dict(
        collections.Counter(
            f"{m['user_flow_name']}/{m['key_name']}"
            for m in history(store_path).measurements(EVERY_ROW)
            if m["key_name"] != "Screen"
        )
    )
    assert page.points() == expected
    assert expected == {"Login/Login Time": 22, "Login/Size": 11, "Search/Search Time": 11}
    screen = page.page.locator("section.key[data-key='Screen']")
    assert (
        screen.locator(".plot").count() == 0 and screen.locator("td", has_text="home").count() == 2
    )
    # what needs attention: the newest run's failed checks, and the worse changes the
    # command finds within the last 5 runs, each linking to its chart
    items = page.page.locator("#attention li a")
    texts = items.all_inner_texts()
    newest = history(store_path).runs()[0]["run_id"]
    failed = [
        (c["nodeid"], c["key"], c["verdict"])
        for c in history(store_path).checks([newest])
        if c["verdict"] not in ("ok", "within the noise")
    ]
    assert len(failed) == 5  # Size over its budget and regressed, both logins and search regressed
    changes = json.loads(run_cli(store_path, "changes", "--format", "json").stdout)["changes"]
    recent = [c for c in changes if c["direction"] == "worse" and c["runs_ago"] < 5]
    # each test's own series: both logins changed, and search; Size, 60 in the newest run
    # only, is suspected: listed, and no attention needed yet
    assert [(c["key"], c["state"]) for c in recent] == [
        ("Login Time", "confirmed"),
        ("Login Time", "confirmed"),
        ("Search Time", "confirmed"),
        ("Size", "suspected"),
    ]
    recent = [c for c in recent if c["state"] == "confirmed"]
    assert len(texts) == len(failed) + len(recent)
    assert sum("is over its budget <= 50 MB" in t for t in texts) == 1
    assert sum(" regressed +" in t for t in texts) == 4
    pct = f"{recent[0]['change_pct']:+.1f}%"
    login = f"worse change: Login/Login Time ({recent[0]['test']}) {pct} (median"
    assert any(t.startswith(login) for t in texts)
    for href in items.evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        assert page.page.locator(f"section.key{href}").count() == 1
    # the budget line, and each test's baseline band for every run the gate checked (6 to 10)
    drawn = page.page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll("section.key")].filter(s => window.userflowViews[s.id])
          .map(s => [s.dataset.key, ["limits", "bands"].map(name => {
              try { return window.userflowViews[s.id].data(name).length; } catch (e) { return 0; }
          })]))""")
    assert drawn == {"Login Time": [0, 10], "Size": [1, 5], "Search Time": [0, 5]}
    # the newest run's values with their verdicts
    size = page.page.locator("section.key[data-key='Size'] table.latest")
    assert "60 MB" in size.inner_text() and "over budget" in size.inner_text()
    # the picture is not blank
    shot = page.page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert len(shot) > 30_000 and all(n > 2_000 for n in page.inked())
    # the command draws the same store: one flow (what needs attention in Search is left out),
    # the newest runs (too few to see a change in)
    out = pytester.path / "last3.html"
    made = run_cli(store_path, "report", "--flow", "Login", "--last", "3", "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"wrote {out}: 3 key(s) over 3 run(s), 4 needing attention, ")
    last3 = Page(browser, out)
    assert last3.messages == [] and last3.points() == {"Login/Login Time": 6, "Login/Size": 3}
    assert not any("Search" in t for t in last3.page.locator("#attention li").all_inner_texts())
    newest = history(store_path).runs()[0]["run_id"]
    assert newest in last3.page.locator("table.run").inner_text()


def test_report_errors_are_one_line(pytester: pytest.Pytester, store_path: Path) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    pytester.runpytest("--userflow", "Empty")
    empty = run_cli(store_path, "report")
    assert empty.returncode == 2
    assert empty.stderr.strip() == (
        "pytest-userflow report: error: nothing to draw: no values in the last 30 run(s)"
    )
    pytester.makepyfile(SUITE)
    pytester.runpytest()
    bad = run_cli(store_path, "report", "-o", str(pytester.path / "no" / "such" / "r.html"))
    assert bad.returncode == 2 and "cannot write" in bad.stderr and bad.stderr.count("\n") == 1


def test_html_path_and_extra_are_checked_before_the_first_test(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(SUITE)
    missing = pytester.runpytest("--userflow-html", "nowhere/report.html")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: --userflow-html: the folder */nowhere does not exist*"])
    blocker = tmp_path / "blocker" / "vl_convert"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not here')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--userflow-html", "r.html", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(blocker.parent), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert (
        "ERROR: --userflow-html: the HTML report needs vl-convert-python, which bundles its "
        "charts into the page: pip install 'pytest-userflow[html]'"
    ) in result.stderr
    assert "passed" not in result.stdout and not (pytester.path / "r.html").exists()


def test_only_the_xdist_controller_writes_the_report(
    pytester: pytest.Pytester, store_path: Path, browser
) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-n", "2", "--userflow-html", "report.html")
    result.assert_outcomes(passed=4)
    assert result.stdout.str().count("HTML report: ") == 1
    page = Page(browser, pytester.path / "report.html")
    assert page.messages == []
    assert page.points() == {"Login/Login Time": 2, "Login/Size": 1, "Search/Search Time": 1}


def test_a_report_of_headspin_events(store_path: Path, hs_env, browser, tmp_path: Path) -> None:
    flow = hs_env.state.create_flow(None, {"name": "Remote"})[1]["user_flow_id"]
    for value, status in ((1.0, "Passed"), (1.1, "Passed"), (2.9, "Failed"), (1.0, "Passed")):
        sid = hs_env.state.add_session()
        hs_env.state.attach_session(None, {"session_id": sid, "status": status}, flow)
        event = list(hs_env.state.events.values())[-1]
        hs_env.state._add_measurements(event, [{"key": "Start", "value": value}])
    out = tmp_path / "remote.html"
    result = run_cli(
        store_path, "--source", "headspin", "report", "--flow", "Remote", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    page = Page(browser, out)
    assert page.messages == [] and page.points() == {"Remote/Start": 4}
    drawn = page.page.evaluate(
        "() => Object.values(window.userflowViews)[0].data('points').map(p => [p.value, p.status])"
    )  # each with its status from HeadSpin's listing (the stand-in's times tie within a second)
    assert sorted(drawn) == [[1.0, "Passed"], [1.0, "Passed"], [1.1, "Passed"], [2.9, "Failed"]]


def test_keys_and_units_with_quotes_and_line_breaks_are_drawn(
    store_path: Path, hs_env, browser, tmp_path: Path
) -> None:
    """Labels HeadSpin holds (another program wrote them): a key with a line break, one with
    a backslash and a quote, units with both. Every chart is drawn, with all its points."""
    flow = hs_env.state.create_flow(None, {"name": "Remote"})[1]["user_flow_id"]
    for value in (1.0, 1.1, 2.9):
        sid = hs_env.state.add_session()
        hs_env.state.attach_session(None, {"session_id": sid, "status": "Passed"}, flow)
        event = list(hs_env.state.events.values())[-1]
        hs_env.state._add_measurements(
            event,
            [
                {"key": "Frame\nTime", "value": value, "units": 'm"s\n\\"'},
                {"key": 'Say "hi\\"', "value": value},
            ],
        )
    out = tmp_path / "hostile.html"
    result = run_cli(
        store_path, "--source", "headspin", "report", "--flow", "Remote", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    page = Page(browser, out)
    assert page.messages == []
    assert page.points() == {"Remote/Frame\nTime": 3, 'Remote/Say "hi\\"': 3}


def test_values_near_the_float_limit_are_drawn(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, browser
) -> None:
    """Values at the float limit, one way and the other, under the gate: their axis and their
    baseline's band reach past what a float holds (Vega then picks its own axis, the band has
    gaps), and every point is drawn, with no error."""
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.userflow("Big")
        def test_big(record_measurement):
            record_measurement("Huge", float(os.environ["HUGE"]))
    """)
    gate = ["--userflow-baseline", "local", "--userflow-regression-mode", "warn"]
    for run in range(8):
        monkeypatch.setenv("HUGE", str(1.7e308 if run % 2 else -1.7e308))
        html = ["--userflow-html", "r.html"] if run == 7 else []
        pytester.runpytest(*gate, *html).assert_outcomes(passed=1)
    page = Page(browser, pytester.path / "r.html")
    assert page.messages == []
    assert page.points() == {"Big/Huge": 8}
