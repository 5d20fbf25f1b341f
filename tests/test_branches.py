"""Branch-aware baselines: each run records its branch (git's, else the CI's) and a pull
request's base; a run is gated against its baseline branch's history, up to its fork point."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest
from conftest import pick, run_cli

from pytest_userflow.runinfo import ci_base_branch, ci_branch

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SUITE = """
    import os
    import pytest

    @pytest.mark.userflow("Home")
    def test_load(record_measurement):
        record_measurement("Load Time", float(os.environ["LOAD_TIME"]), units="ms")
"""
GATE = ("--userflow-baseline", "local", "-p", "no:randomly")
#: A main history of five values, 2% of noise.
MAIN = (100.0, 102.0, 98.0, 101.0, 99.0)


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Callable[..., str]:
    """A git repository on main holding the suite (outside any CI: conftest's ``outside_ci``);
    returns a function running git in it."""
    pytester.makepyfile(SUITE)

    def git(*args: str) -> str:
        config = ["-c", "user.email=t@example.invalid", "-c", "user.name=t"]
        done = subprocess.run(
            ["git", *config, *args], cwd=pytester.path, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    (pytester.path / ".gitignore").write_text(".userflow/\n__pycache__/\n")
    git("add", ".")
    git("commit", "-qm", "suite")
    return git


def run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: float, *args: str
) -> pytest.RunResult:
    monkeypatch.setenv("LOAD_TIME", str(value))
    return pytester.runpytest(*GATE, *args)


def test_a_feature_branch_cannot_move_mains_baseline(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path, history
) -> None:
    for value in MAIN:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "slow-feature")
    for _ in range(8):  # slower, and let through: warnings only
        run(pytester, monkeypatch, 125.0, "--userflow-regression-mode", "warn")
    repo("checkout", "-q", "main")
    result = run(pytester, monkeypatch, 125.0)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*Home/Load Time = 125 ms regressed +25.0%*against its baseline 100*"]
    )
    branches = pick(history(store_path).runs(), "git_branch", "baseline_branch")
    assert branches[0] == ("main", "main")
    assert set(branches[1:9]) == {("slow-feature", "main")}


def test_a_detached_ci_checkout_is_gated_against_the_pull_requests_base(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path, history
) -> None:
    for value in MAIN:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "other")
    for _ in range(5):  # another branch's runs: slower, let through
        run(pytester, monkeypatch, 130.0, "--userflow-regression-mode", "warn")
    repo("checkout", "-q", "--detach", "main")
    monkeypatch.setenv("GITHUB_HEAD_REF", "feature")
    monkeypatch.setenv("GITHUB_BASE_REF", "main")
    result = run(pytester, monkeypatch, 125.0)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Home/Load Time = 125 ms regressed +25.0%*against its baseline 100*",
            "local store * (run *, branch feature; baseline branch main up to run *)",
        ]
    )
    newest = history(store_path).runs(limit=1)[0]
    assert (newest["git_branch"], newest["base_branch"], newest["baseline_branch"]) == (
        "feature",
        "main",
        "main",
    )
    # Detached at main's commit: its fork point is main's newest run.
    assert newest["fork_run"] == history(store_path).runs(limit=1, branch="main")[0]["run_id"]


def test_xdist_workers_are_gated_against_the_baseline_branch(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo
) -> None:
    for value in MAIN:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "other")
    for _ in range(5):
        run(pytester, monkeypatch, 130.0, "--userflow-regression-mode", "warn")
    repo("checkout", "-q", "-b", "feature", "main")
    monkeypatch.setenv("LOAD_TIME", "125")
    pytester.runpytest_subprocess(*GATE, "-n", "2").assert_outcomes(failed=1)


def test_a_branch_is_gated_against_main_up_to_where_it_forked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo
) -> None:
    for value in MAIN:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("branch", "feature")
    (pytester.path / "faster.txt").write_text("main got faster after the branch forked")
    repo("add", ".")
    repo("commit", "-qm", "faster")
    for value in (80.0, 81.0, 79.0, 80.0, 80.0):
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "feature")
    # As fast as main was where it forked: no regression (against main's newest, +25%).
    run(pytester, monkeypatch, 100.0).assert_outcomes(passed=1)
    run(pytester, monkeypatch, 125.0).assert_outcomes(failed=1)


def test_a_run_on_no_known_branch_keeps_every_runs_history(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path, history
) -> None:
    for value in MAIN:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "--detach")  # and no CI variable names a branch
    result = run(pytester, monkeypatch, 125.0)
    result.assert_outcomes(failed=1)
    newest = history(store_path).runs(limit=1)[0]
    assert (newest["git_branch"], newest["baseline_branch"]) == (None, None)


def test_the_baseline_branch_setting_wins(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path, history
) -> None:
    repo("checkout", "-q", "-b", "develop")
    for value in MAIN:
        run(pytester, monkeypatch, value, "--userflow-baseline-branch", "develop")
    repo("checkout", "-q", "-b", "topic")
    monkeypatch.setenv("USERFLOW_BASELINE_BRANCH", "develop")
    run(pytester, monkeypatch, 125.0).assert_outcomes(failed=1)
    assert history(store_path).runs(limit=1)[0]["baseline_branch"] == "develop"


@pytest.mark.parametrize(
    ("env", "branch", "base"),
    [
        ({"GITHUB_HEAD_REF": "feat", "GITHUB_REF_NAME": "7/merge", "GITHUB_BASE_REF": "main"},
         "feat", "main"),
        ({"GITHUB_HEAD_REF": "", "GITHUB_REF_NAME": "main", "GITHUB_BASE_REF": ""}, "main", None),
        ({"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "mr", "CI_COMMIT_REF_NAME": "mr",
          "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "release/2"}, "mr", "release/2"),
        ({"BUILDKITE_BRANCH": "bk", "BUILDKITE_PULL_REQUEST_BASE_BRANCH": ""}, "bk", None),
        ({"BRANCH_NAME": "PR-3", "CHANGE_BRANCH": "fix", "CHANGE_TARGET": "main"}, "fix", "main"),
        ({"BUILD_SOURCEBRANCH": "refs/heads/team/x"}, "team/x", None),
        ({}, None, None),
    ],
)  # fmt: skip
def test_the_ci_names_the_branch_and_a_pull_requests_base(
    env: dict[str, str], branch: str | None, base: str | None
) -> None:
    assert (ci_branch(env), ci_base_branch(env)) == (branch, base)


def test_the_commands_read_the_baseline_branch_and_compare_a_branch_with_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path
) -> None:
    for value in (*MAIN, 100.0):
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "slow-feature")
    for value in (125.0, 126.0, 124.0, 125.0, 127.0, 125.0):
        run(pytester, monkeypatch, value, "--userflow-regression-mode", "warn")
    repo("checkout", "-q", "main")

    changes = run_cli(store_path, "changes", "--fail-on", "worse", "--recent", "10")
    assert changes.returncode == 0, changes.stderr  # the feature's runs are not main's
    assert "0 change(s) in 1 series of the runs of branch main;" in changes.stdout
    feature = run_cli(store_path, "changes", "--branch", "slow-feature", "--format", "json")
    assert feature.returncode == 0 and "of the runs of branch slow-feature" in feature.stderr
    setting = run_cli(store_path, "--baseline-branch", "slow-feature", "changes", "--recent", "10")
    assert "series of the runs of branch slow-feature;" in setting.stdout

    same = run_cli(store_path, "compare", "--fail-over", "10")
    assert same.returncode == 0, same.stderr
    assert "(branch main) against 5 run(s) of branch main" in same.stdout
    worse = run_cli(store_path, "compare", "--branch", "slow-feature", "--fail-over", "10")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "(branch slow-feature) against 5 run(s) of branch main" in worse.stdout
    assert "Home/Load Time +25.0%" in worse.stderr

    unknown = run_cli(store_path, "changes", "--branch", "nope")
    assert unknown.returncode == 2
    assert "the store has no runs of branch 'nope'" in unknown.stderr


def test_the_report_says_which_branch_it_draws(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path
) -> None:
    pytest.importorskip("vl_convert", reason="the [html] extra is not installed")
    for value in MAIN[:2]:
        run(pytester, monkeypatch, value).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "topic")
    run(pytester, monkeypatch, 125.0).assert_outcomes(passed=1)
    out = pytester.path / "page.html"
    done = run_cli(store_path, "report", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "over 2 run(s) of branch main" in done.stdout
    assert "2 run(s) of branch main" in out.read_text()
    done = run_cli(store_path, "report", "--branch", "topic", "-o", str(out))
    assert "over 1 run(s) of branch topic" in done.stdout
    # The run's own page: this run and main's runs, not the topic's earlier one.
    run(pytester, monkeypatch, 125.0, "--userflow-html", "own.html").assert_outcomes(passed=1)
    assert ", 3 run(s), 1 key(s)</p>" in (pytester.path / "own.html").read_text()


def test_accept_starts_where_the_baseline_branchs_level_changed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, repo, store_path, history
) -> None:
    warn = ("--userflow-regression-mode", "warn")
    for value in (*MAIN, 100.0, 130.0, 131.0, 129.0, 130.0, 132.0, 130.0):
        run(pytester, monkeypatch, value, *warn).assert_outcomes(passed=1)
    repo("checkout", "-q", "-b", "faster")
    for value in (80.0, 81.0, 79.0, 80.0):
        run(pytester, monkeypatch, value, *warn).assert_outcomes(passed=1)
    step = history(store_path).runs(branch="main")[5]["run_id"]  # the first at 130
    done = run_cli(store_path, "accept", "--flow", "Home", "--key", "Load Time")
    assert done.returncode == 0, done.stderr
    assert f"from run {step}, where its newest change began (+30" in done.stdout
