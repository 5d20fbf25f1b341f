"""pytest-userflow: record performance measurements from tests into user flows.

The plugin loads by itself once installed; these names are for scripts and conftest hooks.
"""

from .gate import BudgetExceeded
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
