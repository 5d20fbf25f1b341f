"""The xdist controller's side of a run: which device each worker drives, and the workers'
summaries taken back. Imported by the plugin's xdist hooks only when there is one to use.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .recorder import UserflowRun


def device_for(worker: str, devices: tuple[str, ...], taken: set[str | None]) -> str | None:
    """Worker gwN drives the N-th device; one that xdist starts in place of a dead worker
    (named gw2 after gw0 and gw1) takes the device that no live worker drives."""
    own = nth_device(worker, devices)
    if own is not None and own not in taken:
        return own
    return next((device for device in devices if device not in taken), None)


def worker_down(run: UserflowRun, worker: str, device: str | None, output: str | None) -> None:
    """*worker* (driving *device*) is down: its summary (*output*, JSON) is the run's, or when
    it died without one, what it finished is read from the store."""
    from .model import ProcessSummary

    if output is not None:
        run.summary.processes.append(ProcessSummary.from_dict(json.loads(output)))
    elif run.settings.backend != "off":
        # What the dead worker finished is in the store when it shares this host's file
        # system (popen workers do); remote workers' stores are on their hosts.
        run.worker_died(worker, device)


def nth_device(worker: str, devices: tuple[str, ...]) -> str | None:
    """Worker gwN's own device: the N-th."""
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    return devices[index] if 0 <= index < len(devices) else None
