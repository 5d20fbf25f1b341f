"""Measurements, statuses and identifiers, and their validation.

This module knows nothing of pytest: the client, the store and the CLI use it too.

>>> Measurement.create("Login Time", 1.25, units="seconds")
Measurement(key='Login Time', value=1.25, type=None, units='seconds')
"""

from __future__ import annotations

import math
import numbers
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

Value = int | float | str
#: A measurement as a test records it: (key, value, type, units) in a plain tuple, which the
#: journal writes as it is. A ``Measurement`` is built from it only where one is read (hooks,
#: budgets, uploads): a test recording ten values makes no named tuple.
Row = tuple[str, Value, "str | None", "str | None"]

#: Statuses a test can have in a user flow (the API document's spelling).
STATUSES = ("Passed", "Failed", "Excluded")
#: Statuses the measurement listing filters on (``status=`` query parameter).
FILTER_STATUSES = ("passed", "failed", "not_set", "excluded")
#: The ints the store keeps (SQLite's 64-bit INTEGER).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: The API document's limit for a status message we send.
MAX_STATUS_MESSAGE = 255
#: HeadSpin's API base, and the variable its token is read from. Here, not in client.py, so
#: that the plugin's options can name them without loading the client on a local run.
DEFAULT_URL = "https://api-dev.headspin.io"
TOKEN_ENV = "HEADSPIN_API_TOKEN"


class UserflowError(Exception):
    """Base of every error pytest-userflow raises on purpose."""


class MeasurementError(UserflowError, ValueError):
    """A measurement, status or identifier that the API would not accept."""


def _where(where: str | None) -> str:
    return f" in {where}" if where else ""


def _check_label(name: str, value: object, where: str | None, *, required: bool) -> str | None:
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise MeasurementError(
            f"{name} must be a str{'' if required else ' or None'}, "
            f"got {type(value).__name__} {value!r}{_where(where)}"
        )
    if required and not value.strip():
        raise MeasurementError(f"{name} must be a non-empty str, got {value!r}{_where(where)}")
    return plain_str(value)


def plain_str(text: str) -> str:
    """*text* as an exact str: a subclass's (a StrEnum member's, numpy's str_) characters, as
    the journal and the store keep them."""
    return text if text.__class__ is str else str.__str__(text)


def check_value(value: object, *, key: str = "?", where: str | None = None) -> Value:
    """Return *value* as the API takes it, or raise :class:`MeasurementError`.

    A finite int or float (any real number type, numpy's included) or a str.
    bool is refused even though it is an int: it is almost always a mistake. An int must
    fit in 64 bits, as the store (SQLite) keeps it.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(value, str):
        return plain_str(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MeasurementError(
            f"value for key {key!r} must be a finite int, float or str, "
            f"got {type(value).__name__} {value!r}{_where(where)}"
        )
    if isinstance(value, numbers.Integral):
        integer = int(value)
        if not INT_MIN <= integer <= INT_MAX:
            raise MeasurementError(
                f"value for key {key!r} is an int beyond 64 bits ({integer}), which the store "
                f"cannot keep; pass it as a float (float(value)){_where(where)}"
            )
        return integer
    number = float(value)
    if not math.isfinite(number):
        raise MeasurementError(
            f"value for key {key!r} must be finite, got {number!r}{_where(where)}"
        )
    return number


class Measurement(NamedTuple):
    """One key/value pair of a test, with the optional type (category) and units.

    A named tuple: immutable, and built at the cost of a tuple (a test may record many).
    """

    key: str
    value: Value
    type: str | None = None
    units: str | None = None

    @classmethod
    def create(
        cls,
        key: object,
        value: object,
        *,
        type: object = None,
        units: object = None,
        where: str | None = None,
    ) -> Measurement:
        """Validate and build; *where* names the test (or call) in error messages."""
        __tracebackhide__ = True  # pytest shows the caller's line, not ours
        checked_key = _check_label("key", key, where, required=True)
        assert checked_key is not None
        return cls(
            checked_key,
            check_value(value, key=checked_key, where=where),
            _check_label("type", type, where, required=False),
            _check_label("units", units, where, required=False),
        )

    def row(self) -> Row:
        """This measurement as a test keeps it: a plain tuple (see ``Row``)."""
        return (self.key, self.value, self.type, self.units)

    @classmethod
    def coerce(cls, item: object, *, where: str | None = None) -> Measurement:
        """Accept a Measurement or a ``{key, value, type?, units?}`` mapping."""
        __tracebackhide__ = True  # pytest shows the caller's line, not ours
        if isinstance(item, Measurement):
            return cls.create(item.key, item.value, type=item.type, units=item.units, where=where)
        if isinstance(item, Mapping):
            unknown = set(item) - {"key", "value", "type", "units"}
            if unknown or "key" not in item or "value" not in item:
                raise MeasurementError(
                    "a measurement mapping needs 'key' and 'value' (and optionally 'type', "
                    f"'units'), got keys {sorted(map(str, item))}{_where(where)}"
                )
            return cls.create(
                item["key"],
                item["value"],
                type=item.get("type"),
                units=item.get("units"),
                where=where,
            )
        raise MeasurementError(
            f"a measurement must be a Measurement or a mapping, "
            f"got {type(item).__name__}{_where(where)}"
        )

    def to_api(self) -> dict[str, Any]:
        """The measurement as an element of the API's ``data`` list."""
        data: dict[str, Any] = {"key": self.key, "value": self.value}
        if self.type is not None:
            data["type"] = self.type
        if self.units is not None:
            data["units"] = self.units
        return data


def dedupe(measurements: list[Measurement]) -> list[Measurement]:
    """Keep the last value of each (key, type), as the API does when it overwrites."""
    if len({(m.key, m.type) for m in measurements}) == len(measurements):
        return list(measurements)  # the common case: nothing to drop, the order stays
    seen: dict[tuple[str, str | None], Measurement] = {}
    for m in measurements:
        seen.pop((m.key, m.type), None)
        seen[(m.key, m.type)] = m
    return list(seen.values())


def normalize_status(status: object, *, where: str | None = None) -> str:
    """``"passed"`` -> ``"Passed"``; anything but the three statuses is an error."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(status, str):
        for known in STATUSES:
            if status.strip().lower() == known.lower():
                return known
    raise MeasurementError(
        f"status must be one of {', '.join(STATUSES)}, got {status!r}{_where(where)}"
    )


def normalize_filter_status(status: object) -> str:
    """A status for the listing filter: passed, failed, not_set or excluded."""
    if isinstance(status, str):
        value = status.strip().lower().replace(" ", "_").replace("-", "_")
        if value in FILTER_STATUSES:
            return value
    raise MeasurementError(
        f"status filter must be one of {', '.join(FILTER_STATUSES)}, got {status!r}"
    )


def truncate_message(message: str | None, limit: int = MAX_STATUS_MESSAGE) -> str | None:
    """One line, at most *limit* characters (an ellipsis marks a cut)."""
    if message is None:
        return None
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_session_id(session_id: object, *, where: str | None = None) -> str:
    """A HeadSpin capture session id is a UUID; return it in canonical form."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    if isinstance(session_id, str):
        try:
            return str(uuid.UUID(session_id.strip()))
        except ValueError:
            pass
    raise MeasurementError(
        f"session_id must be a HeadSpin session UUID such as "
        f"'9f527e3f-daa1-11ec-ac12-06c4c57ba6cd', got {session_id!r}{_where(where)}"
    )


def check_device_address(address: object, *, where: str | None = None) -> str:
    """A device address is ``device_id@hostname``, both parts non-empty, no spaces."""
    __tracebackhide__ = True  # pytest shows the caller's line, not ours
    if isinstance(address, str):
        device_id, at, host = address.strip().partition("@")
        if (
            at
            and device_id
            and host
            and "@" not in host
            and not any(c.isspace() for c in address.strip())
        ):
            return address.strip()
    raise MeasurementError(
        f"device address must look like 'device_id@hostname' "
        f"(for example 'R58M41@proxy-us-mvo-5.headspin.io'), got {address!r}{_where(where)}"
    )
