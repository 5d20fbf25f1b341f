"""Cold start to home screen: the numbers a performance team watches first."""

import pytest

pytestmark = pytest.mark.userflow("Login", description="cold start, login, home screen")


def test_cold_start_and_login(app, record_measurement):
    with record_measurement.timer("App Launch", type="Startup"):
        app.launch()
    with record_measurement.timer("First Frame", type="Startup"):
        app.first_frame()
    # budget=: the test fails if logging in ever takes longer than a quarter of a second
    with record_measurement.timer("Login Time", type="Custom Metrics", budget=0.25):
        token = app.login("ada")
    assert token.startswith("token-for-")
    record_measurement("Memory", 182.5, type="Resources", units="MB")
    record_measurement("Landing Screen", "home")  # values need not be numeric
