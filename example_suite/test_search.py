"""Search: one flow, one test per query (the parameter is part of each test's node id)."""

import pytest


@pytest.mark.userflow("Search", description="type a query, wait for results")
@pytest.mark.parametrize("query", ["shoes", "running shoes", "waterproof trail running shoes"])
def test_search(app, record_measurement, query):
    with record_measurement.timer("Search Time", type="Custom Metrics"):
        results = app.search(query)
    record_measurement("Results", len(results), units="items")
    assert results
