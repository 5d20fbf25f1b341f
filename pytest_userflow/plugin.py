"""pytest-userflow's pytest hooks: options, markers, fixtures and the wiring of a run.

Every pytest process with the plugin installed loads this module, so it imports only what
declares options, markers, fixtures and hooks. The recording (``recorder``) is imported when
a run starts, and the xdist controller's hooks (``xdist``) only when xdist is loaded.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from . import hookspecs, options
from .fixtures import (  # noqa: F401  (the fixtures are found on the plugin module)
    record_measurement,
    userflow,
    userflow_device,
    userflow_session,
)

MARKER = (
    "userflow(name, *, description=None): record this test into the user flow NAME "
    "(on a test, class or module; the nearest marker wins)"
)
BUDGET_MARKER = (
    "userflow_budget(key, max=None, min=None, direction=None): fail the test when KEY is above "
    "max or below min; direction lower, higher or ignore says which way it is better for the "
    "regression gate (repeatable; the nearest marker for a key wins)"
)
RUN_NAME = "userflow-run"
CONTROLLER_NAME = "userflow-controller"


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, object, object]:
    # Several devices and no -n: one xdist worker per device. A wrapper runs before
    # xdist's own (tryfirst) pytest_cmdline_main, which turns numprocesses into workers.
    # Workers run this hook too: they must never spawn workers of their own.
    devices = options.configured_devices(config)
    if (
        len(devices) > 1
        and not hasattr(config, "workerinput")
        and config.pluginmanager.hasplugin("xdist")
        and getattr(config.option, "numprocesses", None) is None
        and not getattr(config.option, "tx", None)
        and getattr(config.option, "dist", "no") == "no"
    ):
        config.option.numprocesses = len(devices)
    return (yield)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    config.addinivalue_line("markers", BUDGET_MARKER)
    if config.option.help or config.option.version:
        return
    settings = options.resolve_config(config)
    options.check_workers(config, settings.devices)
    from .recorder import UserflowRun

    run = UserflowRun(config, settings)
    config.pluginmanager.register(run, RUN_NAME)
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        from .xdist import ControllerHooks

        config.pluginmanager.register(ControllerHooks(run), CONTROLLER_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (CONTROLLER_NAME, RUN_NAME):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            if name == RUN_NAME:
                plugin.close()
            config.pluginmanager.unregister(plugin)
