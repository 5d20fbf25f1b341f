"""What a run records about itself: id, start, host, git commit and branch (and a pull
request's base), CI build id.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import RunInfo

#: CI systems' build identifiers, first found wins.
CI_BUILD_VARS = (
    "GITHUB_RUN_ID",
    "CI_PIPELINE_ID",
    "BUILDKITE_BUILD_ID",
    "CIRCLE_WORKFLOW_ID",
    "CIRCLE_BUILD_NUM",
    "TRAVIS_BUILD_ID",
    "BUILD_BUILDID",
    "CODEBUILD_BUILD_ID",
    "TEAMCITY_BUILD_ID",
    "BITBUCKET_BUILD_NUMBER",
    "BUILD_TAG",
    "BUILD_ID",
    "BUILD_NUMBER",
)


#: CI systems' names of the branch a build is of, first found wins: a pull request's own
#: branch before the variable that names the ref built (on GitHub ``GITHUB_REF_NAME`` is
#: ``123/merge`` for a pull request, on Jenkins ``BRANCH_NAME`` is ``PR-123``).
CI_BRANCH_VARS = (
    "GITHUB_HEAD_REF",
    "GITHUB_REF_NAME",
    "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME",
    "CI_COMMIT_REF_NAME",
    "BUILDKITE_BRANCH",
    "CHANGE_BRANCH",
    "BRANCH_NAME",
    "CIRCLE_BRANCH",
    "TRAVIS_PULL_REQUEST_BRANCH",
    "TRAVIS_BRANCH",
    "BITBUCKET_BRANCH",
    "SYSTEM_PULLREQUEST_SOURCEBRANCH",
    "BUILD_SOURCEBRANCH",
)
#: CI systems' names of a pull request's base branch, first found wins.
CI_BASE_VARS = (
    "GITHUB_BASE_REF",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "BUILDKITE_PULL_REQUEST_BASE_BRANCH",
    "CHANGE_TARGET",
    "BITBUCKET_PR_DESTINATION_BRANCH",
    "SYSTEM_PULLREQUEST_TARGETBRANCH",
)
#: Commits of HEAD's history that the fork point is looked for in.
ANCESTORS = 10_000


def _first(names: tuple[str, ...], env: Mapping[str, str]) -> str | None:
    """The first of the variables *names* set in *env*, a ref's name without ``refs/heads/``
    (Azure Pipelines gives the whole ref)."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value.removeprefix("refs/heads/")
    return None


def ci_branch(env: Mapping[str, str] | None = None) -> str | None:
    """The branch the CI builds, from its variables; None outside CI."""
    return _first(CI_BRANCH_VARS, os.environ if env is None else env)


def ci_base_branch(env: Mapping[str, str] | None = None) -> str | None:
    """A pull request's base branch, from the CI's variables; None for other builds."""
    return _first(CI_BASE_VARS, os.environ if env is None else env)


def git_ancestors(cwd: Path, limit: int = ANCESTORS) -> set[str] | None:
    """The newest *limit* commits of HEAD's history (HEAD's own included), as git lists them;
    None outside a repository or where git is not installed. A shallow clone lists what it
    has."""
    try:
        out = subprocess.run(
            ["git", "rev-list", f"--max-count={limit}", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def git_head(cwd: Path) -> tuple[str | None, str | None]:
    """(commit, branch) of the repository around *cwd*, as git says; (None, None) outside
    one, or where git is not installed. A detached HEAD has no branch."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None, None
    commit, branch = lines
    return commit, None if branch == "HEAD" else branch


def ci_build_id() -> str | None:
    for name in CI_BUILD_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def new_run(cwd: Path, backend: str, seed: Mapping[str, Any] | None = None) -> RunInfo:
    """This run's metadata: its branch is git's, else (a detached CI checkout) the CI's.
    *seed*: its ``run_id`` and ``started_at`` when already given (by the xdist controller)."""
    commit, branch = git_head(cwd)
    return RunInfo(
        run_id=seed["run_id"] if seed else uuid.uuid4().hex[:16],
        started_at=seed["started_at"] if seed else time.time(),
        host=socket.gethostname(),
        git_commit=commit,
        git_branch=branch or ci_branch(),
        base_branch=ci_base_branch(),
        ci_build_id=ci_build_id(),
        backend=backend,
    )
