"""pytest-userflow: record performance measurements from tests into user flows.

The plugin loads by itself once installed; these names are for scripts and conftest hooks.
"""

from typing import TYPE_CHECKING, Any

from .measurement import Measurement, MeasurementError, UserflowError

if TYPE_CHECKING:
    from .budgets import BudgetExceeded

__all__ = ["BudgetExceeded", "Measurement", "MeasurementError", "UserflowError", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Loaded when asked for: a run with no budget, and the folder process, never load budgets.
    if name == "BudgetExceeded":
        from .budgets import BudgetExceeded

        return BudgetExceeded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
