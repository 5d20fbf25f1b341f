"""The xdist controller's side of a run: it hands the run to its workers and takes back
their summaries. Registered only when pytest-xdist is loaded (and not in a worker)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .model import ProcessSummary

if TYPE_CHECKING:
    from .recorder import UserflowRun


class ControllerHooks:
    """xdist's hooks for *run*, the controller's ``UserflowRun``."""

    def __init__(self, run: UserflowRun) -> None:
        self.run = run
        self.devices: dict[str, str | None] = {}  # each live worker's device

    def pytest_configure_node(self, node: Any) -> None:
        worker = str(node.gateway.id)
        self.devices[worker] = node.workerinput["userflow_device"] = self._device_for(worker)
        node.workerinput["userflow_run"] = self.run.seed  # one run id for every worker

    def _device_for(self, worker: str) -> str | None:
        """Worker gwN drives the N-th device; one that xdist starts in place of a dead worker
        (named gw2 after gw0 and gw1) takes the device that no live worker drives."""
        devices = self.run.settings.devices
        taken = set(self.devices.values())
        own = nth_device(worker, devices)
        if own is not None and own not in taken:
            return own
        return next((device for device in devices if device not in taken), None)

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        worker = str(node.gateway.id)
        device = self.devices.pop(worker, None)
        output = getattr(node, "workeroutput", None) or {}
        if "userflow" in output:
            summary = ProcessSummary.from_dict(json.loads(output["userflow"]))
            self.run.summary.processes.append(summary)
        elif self.run.active and self.run.settings.backend != "off":
            # What the dead worker finished is in the store when it shares this host's file
            # system (popen workers do); remote workers' stores are on their hosts.
            self.run.worker_died(worker, device)


def nth_device(worker: str, devices: tuple[str, ...]) -> str | None:
    """Worker gwN's own device: the N-th."""
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    return devices[index] if 0 <= index < len(devices) else None
