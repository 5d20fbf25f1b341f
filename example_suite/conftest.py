"""A simulated mobile app, so the example runs anywhere: no phone, no token needed.

With a real device you would build an Appium driver here instead, once per worker:

    @pytest.fixture(scope="session")
    def driver(userflow_device):
        device_id, _, host = userflow_device.partition("@")
        ...  # webdriver.Remote(f"https://{host}/v0/<token>/wd/hub", options=...)

and attach its HeadSpin capture session in each test with
``userflow.attach_session(driver.session_id)``.
"""

from __future__ import annotations

import os
import random
import time

import pytest


class ShopApp:
    """Pretends to be a shopping app: each action takes a little, slightly varying, time."""

    def __init__(self, device: str | None, seed: int = 7) -> None:
        self.device = device or "simulator@localhost"
        self.rng = random.Random(seed)
        self.cart: list[str] = []
        # SHOP_SLOWDOWN=1.3 makes every action 30% slower: try the regression gate with it.
        self.slowdown = float(os.environ.get("SHOP_SLOWDOWN", "1"))

    def _work(self, seconds: float) -> None:
        time.sleep(seconds * self.slowdown * self.rng.uniform(0.8, 1.25))

    def launch(self) -> None:
        self._work(0.03)

    def first_frame(self) -> None:
        self._work(0.01)

    def login(self, user: str) -> str:
        self._work(0.04)
        return f"token-for-{user}"

    def search(self, query: str) -> list[str]:
        self._work(0.01 + 0.005 * len(query))
        return [f"{query} #{i}" for i in range(self.rng.randint(3, 40))]

    def add_to_cart(self, item: str) -> None:
        self._work(0.005)
        self.cart.append(item)

    def pay(self, coupon: str | None = None) -> str:
        if coupon:
            raise RuntimeError(f"coupon {coupon!r} rejected by the payment service")
        self._work(0.05)
        return "receipt-0001"


@pytest.fixture(scope="session")
def app(userflow_device: str | None) -> ShopApp:
    """One app per worker (per device with --userflow-device)."""
    return ShopApp(userflow_device)
