"""pytest-userflow: record performance measurements from tests into user flows.

The plugin loads by itself once installed; these names are for scripts and conftest hooks.
"""

from typing import Any

from .model import Measurement, MeasurementError, TestRecord, UserflowError, UserflowWarning

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

# A traceback names the error where users import it: pytest_userflow.MeasurementError.
for _public in (MeasurementError, UserflowError, UserflowWarning):
    _public.__module__ = __name__


def __getattr__(name: str) -> Any:
    # The gate (and its statistics) loads only when a failure or a script names it.
    if name == "BudgetExceeded":
        from .gate import BudgetExceeded

        return BudgetExceeded
    raise AttributeError(f"module 'pytest_userflow' has no attribute {name!r}")
