"""What a run records about itself: id, start, host, git commit and branch, CI build id."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

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


def new_run(cwd: Path, backend: str) -> RunInfo:
    commit, branch = git_head(cwd)
    return RunInfo(
        run_id=uuid.uuid4().hex[:16],
        started_at=time.time(),
        host=socket.gethostname(),
        git_commit=commit,
        git_branch=branch,
        ci_build_id=ci_build_id(),
        backend=backend,
    )
