"""pytest-userflow: record performance measurements from tests into user flows.

The plugin loads by itself once installed; these names are for scripts and conftest hooks.
They are imported on first use: every pytest process with the plugin installed imports this
package, and most of them record nothing.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

from typing import Any

__all__ = [
    "BudgetExceeded",
    "Measurement",
    "MeasurementError",
    "TestRecord",
    "UserflowError",
    "UserflowWarning",
    "__version__",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "BudgetExceeded":
        from .gate import BudgetExceeded

        return BudgetExceeded
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'pytest_userflow' has no attribute {name!r}")
