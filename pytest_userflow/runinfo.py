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


def _git_dir(start: Path) -> Path | None:
    """The repository's git directory, from *start* upwards (a worktree's ``.git`` file too)."""
    for folder in (start, *start.parents):
        dotgit = folder / ".git"
        if dotgit.is_dir():
            return dotgit
        if dotgit.is_file():
            text = dotgit.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            return (folder / text[len("gitdir:") :].strip()).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"  # a linked worktree keeps its branches there
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
    for folder in (git_dir, common):
        loose = folder / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8", errors="replace").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and not line.startswith(("#", "^")):
                return sha
    return None


def git_head(cwd: Path) -> tuple[str | None, str | None]:
    """(commit, branch) of the repository around *cwd*; (None, None) outside one.

    Read from the files in ``.git`` (two ``git`` processes cost 20-30 ms at every run's
    start); ``git`` itself answers when the files say something this does not read.
    """
    if "GIT_DIR" not in os.environ:
        try:
            git_dir = _git_dir(cwd.resolve())
            if git_dir is None:
                return None, None
            head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
            if head.startswith("ref:"):
                ref = head[len("ref:") :].strip()
                commit = _resolve_ref(git_dir, ref)
                if commit is not None:
                    return commit, ref.removeprefix("refs/heads/")
            elif len(head) == 40 and all(c in "0123456789abcdef" for c in head):
                return head, None  # a detached HEAD
        except OSError:
            pass
    branch = _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    return _git(cwd, "rev-parse", "HEAD"), None if branch == "HEAD" else branch


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
