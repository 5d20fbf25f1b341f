"""Search: one test per query, each query its own flow (a marker on each parameter), so
a long query is never judged against the baseline of a short one."""

import pytest


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("shoes", marks=pytest.mark.userflow("Search: 1 word")),
        pytest.param("running shoes", marks=pytest.mark.userflow("Search: 2 words")),
        pytest.param(
            "waterproof trail running shoes", marks=pytest.mark.userflow("Search: 4 words")
        ),
    ],
)
def test_search(app, record_measurement, query):
    with record_measurement.timer("Search Time", type="Custom Metrics"):
        results = app.search(query)
    record_measurement("Results", len(results), units="items")
    assert results
