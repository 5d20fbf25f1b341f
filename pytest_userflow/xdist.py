"""The xdist controller's side of a run: it hands the run to its workers and takes back
their summaries. Registered only when pytest-xdist is loaded (and not in a worker)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recorder import UserflowRun


class ControllerHooks:
    """xdist's hooks for *run*, the controller's ``UserflowRun``."""

    def __init__(self, run: UserflowRun) -> None:
        self.run = run

    def pytest_configure_node(self, node: Any) -> None:
        if self.run.run is not None:
            node.workerinput["userflow_run"] = self.run.run.as_dict()

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        if "userflow" in output:
            self.run.summaries.append(json.loads(output["userflow"]))
        elif self.run.active and self.run.run is not None and self.run.store is not None:
            # What the dead worker finished is in the store when it shares this host's file
            # system (popen workers do); remote workers' stores are on their hosts.
            self.run.worker_died(str(node.gateway.id))
