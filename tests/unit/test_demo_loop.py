"""The loop demo's simulated population: every cycle moves it away from what the champion was trained on."""

from types import SimpleNamespace

from mlops.demo.loop import DRIFT_SCHEDULE, _move_population, next_drift, population_drift


def test_the_population_moves_away_and_back_across_separate_calls(tmp_path):
    settings = SimpleNamespace(home=tmp_path / "home")  # the folder does not exist yet
    assert population_drift(settings, "churn") == 0.0
    seen = []
    for _ in range(4):  # e.g. four soak loops, each a separate `run_loops(cycles=1)`
        drift = next_drift(population_drift(settings, "churn"))
        _move_population(settings, "churn", drift)
        seen.append(drift)
    assert seen == [2.0, 0.0, 2.0, 0.0]
    assert population_drift(settings, "other") == 0.0  # per model


def test_an_unknown_level_starts_the_schedule():
    assert next_drift(0.7) == DRIFT_SCHEDULE[0]
    assert next_drift(DRIFT_SCHEDULE[-1]) == DRIFT_SCHEDULE[0]
