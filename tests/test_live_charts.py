"""The live view's shared chart cache: every tab watching a run gets the same charts, built
once per change of the run's rows, with the points a tab's own buffer would have drawn."""

from __future__ import annotations

import pyarrow as pa
import pytest

from app_pages import live_charts, views
from app_pages.live_charts import ChartCache
from core.board import Board
from core.config import preset
from core.store import RunStore
from tests.conftest import tiny_config


def records(spec: dict) -> dict[str, list[dict]]:
    """A chart's datasets, read back from the Arrow bytes Streamlit will send."""
    return {name: pa.ipc.open_stream(data).read_all().to_pylist()
            for name, data in spec["datasets"].items()}


def batches(store: RunStore, run_id: str, first: int, last: int) -> None:
    store.add_metrics(run_id, [(step, 0, "batch", name, 1.0 / step, 0.0)
                               for step in range(first, last + 1)
                               for name in ("loss", "accuracy")])


@pytest.fixture
def watched(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run(tiny_config(), probes=["A fine film."])
    return store, run_id, ChartCache(Board(store, period=0.0))


def test_tabs_share_one_build_per_change_of_the_rows(watched):
    store, run_id, cache = watched
    run = store.get(run_id)
    assert cache.charts(run).batch_loss is None  # nothing yet: the page says so
    batches(store, run_id, 1, 30)
    first = [cache.charts(run)]
    built = cache.builds
    first += [cache.charts(run) for _ in range(4)]  # four more tabs' reruns
    assert cache.builds == built  # built once for all tabs
    assert all(records(c.batch_loss) == records(first[0].batch_loss) for c in first)
    batches(store, run_id, 31, 40)
    later = cache.charts(run)
    assert cache.builds == built + 1 and later.batches_read == 40  # the batch charts alone


def test_charts_hold_the_points_of_a_tabs_own_buffer(watched):
    store, run_id, cache = watched
    batches(store, run_id, 1, 25)
    store.add_metrics(run_id, [(0, 0, "train", "loss", 0.5, 0.0), (0, 0, "val", "loss", 0.6, 0.0),
                               (0, 0, "train", "accuracy", 0.7, 0.0),
                               (0, 0, "val", "accuracy", 0.65, 0.0),
                               (0, -1, "probe", "probe0", 0.8, 0.0), (0, 0, "probe", "probe0", 0.9, 0.0)])
    charts = cache.charts(store.get(run_id))
    own = views.CurveBuffer()
    own.feed(store.metrics(run_id, "batch"))
    frame = own.frame()
    assert charts.batch_accuracy["layer"] == views.batch_template("accuracy")["layer"]
    assert records(charts.batch_accuracy)[views.POINTS] == frame[
        frame["metric"] == "accuracy"].to_dict("records")
    epoch = records(charts.epoch_accuracy)
    assert sorted(r["value"] for rows in epoch.values() for r in rows
                  if "phase" in r) == [0.65, 0.7]
    assert charts.probes is not None and charts.epoch_loss is not None


def test_a_tab_may_consume_its_copy(watched):
    """Streamlit takes the datasets out of the spec it is given: the cache keeps its own."""
    store, run_id, cache = watched
    batches(store, run_id, 1, 5)
    run = store.get(run_id)
    cache.charts(run).batch_loss.pop("datasets")
    assert records(cache.charts(run).batch_loss)[views.POINTS]


def resolved(spec: dict) -> dict:
    """A spec with each layer's named data replaced by its rows (Arrow bytes read back), so
    that a template filled with rows and a chart Altair built from them compare equal."""
    data = {name: (pa.ipc.open_stream(rows).read_all().to_pylist()
                   if isinstance(rows, bytes) else rows)
            for name, rows in spec.get("datasets", {}).items()}

    def fill(part: dict) -> dict:
        named = part.get("data", {}).get("name")
        return {**part, **({"data": data[named]} if named else {}),
                **({"layer": [fill(layer) for layer in part["layer"]]} if "layer" in part else {})}

    return fill({k: v for k, v in spec.items() if k != "datasets"})


def test_epoch_and_probe_charts_from_templates_equal_altairs_own(watched):
    """The epoch and probe charts are filled templates (Altair runs once per shape): they
    must draw what Altair builds from the same rows."""
    store, _, cache = watched
    run_id = store.create_run(preset("seed-lstm"), probes=["A fine film.", "Dull."])
    rows = [(0, e, phase, name, 0.1 * e + len(phase) / 10, 0.0) for e in (0, 1)
            for phase in ("train", "val") for name in ("loss", "accuracy")]
    rows += [(0, e, "probe", f"probe{i}", 0.3 + 0.1 * e + 0.05 * i, 0.0)
             for e in (-1, 0, 1) for i in (0, 1)]
    store.add_metrics(run_id, rows)
    run = store.get(run_id)
    charts = cache.charts(run)
    epochs = views.epoch_frame(store.metrics(run_id, "train") + store.metrics(run_id, "val"))
    ref, label = views.tutorial_line(87.48)
    expected = {"epoch_loss": views.epoch_chart(epochs, "loss"),
                "epoch_accuracy": views.epoch_chart(epochs, "accuracy", ref, label),
                "probes": views.probe_chart(views.probe_frame(store.metrics(run_id, "probe"),
                                                              run.probes))}
    for name, chart in expected.items():
        assert resolved(getattr(charts, name)) == resolved(chart.to_dict()), name


def test_templates_built_ahead_are_the_ones_a_run_uses(watched):
    """The background warm-up must build the very templates a preset run's charts use, or
    the first run a fresh server shows would still pay Altair's builds."""
    store, _, cache = watched
    live_charts._template.cache_clear()
    cache.warm_in_background().join(timeout=120)
    built = live_charts._template.cache_info().currsize
    run_id = store.create_run(preset("seed-cnn-lstm"), probes=["A fine film."])
    store.add_metrics(run_id, [(0, e, phase, name, 0.5, 0.0) for e in range(3)
                               for phase in ("train", "val") for name in ("loss", "accuracy")]
                      + [(0, e, "probe", "probe0", 0.5, 0.0) for e in range(-1, 3)])
    cache.charts(store.get(run_id))
    assert live_charts._template.cache_info().currsize == built  # nothing new to build
