"""pytest-userflow: record performance measurements from tests into user flows.

The plugin loads by itself once installed; these names are for scripts and conftest hooks.
"""

from .budgets import BudgetExceeded
from .measurement import Measurement, MeasurementError, UserflowError

__all__ = ["BudgetExceeded", "Measurement", "MeasurementError", "UserflowError", "__version__"]
__version__ = "0.1.0"
