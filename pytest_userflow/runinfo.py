"""What a run records about itself: id, start, host, git commit and branch, CI build id."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from .store import RunInfo

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


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def ci_build_id() -> str | None:
    for name in CI_BUILD_VARS:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def new_run(cwd: Path, backend: str) -> RunInfo:
    branch = _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    return RunInfo(
        run_id=uuid.uuid4().hex[:16],
        started_at=time.time(),
        host=socket.gethostname(),
        git_commit=_git(cwd, "rev-parse", "HEAD"),
        git_branch=None if branch == "HEAD" else branch,
        ci_build_id=ci_build_id(),
        backend=backend,
    )


def run_from_dict(data: dict[str, Any]) -> RunInfo:
    """The controller's RunInfo as a worker receives it through workerinput."""
    return RunInfo(
        run_id=str(data["run_id"]),
        started_at=float(data["started_ts"]),
        host=socket.gethostname(),
        git_commit=data.get("git_commit"),
        git_branch=data.get("git_branch"),
        ci_build_id=data.get("ci_build_id"),
        backend=str(data.get("backend", "local")),
    )
