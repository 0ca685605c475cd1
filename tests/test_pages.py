"""The dashboard's pages, driven headlessly with Streamlit's AppTest (no browser).

Every test gets its own LAB_HOME (``lab`` / ``lab_with_run``) and the demo data. Widgets are
driven by their keys, which every page prefixes with its name (train_, predict_, ...).
"""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import RUN_TIMEOUT_S, TINY, tiny_config
from core import jobs
from core.board import POLL_S
from core.config import ARCHITECTURES, COMMON_FIELDS
from core.predict import Predictor
from core.store import ACTIVE, CANCELLED, COMPLETED, QUEUED

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT_S = 120  # one script run; the first one imports TensorFlow on a busy 2-core machine
# A job that runs for minutes (2,000 reviews in batches of 2, 50 epochs): it is still active
# however fast the machine; tests cancel it (and the lab fixture kills its worker).
LONG = {"train_size": 0, "batch_size": 2, "epochs": 50}
PAGES = {"data": None, "train": "app_pages/train.py", "compare": "app_pages/compare.py",
         "predict": "app_pages/predict.py"}


def open_page(name: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    if query:
        at.query_params.update(query)
    at.run()
    if PAGES[name]:
        at.switch_page(PAGES[name]).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def keys(elements) -> set[str]:
    return {e.key for e in elements}


def query_run(at: AppTest) -> str | None:
    value = at.query_params.get("run")
    return value[-1] if isinstance(value, list) else value


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def fill_form(at: AppTest, values: dict) -> AppTest:
    """Set Train-page fields by key, architecture first (it decides which fields exist)."""
    if "architecture" in values:
        at.selectbox(key="train_architecture").set_value(values["architecture"]).run()
    for field, value in values.items():
        if field == "architecture":
            continue
        key = "train_" + field
        if field in ("name",):
            at.text_input(key=key).input(value)
        elif field == "probes":
            at.text_area(key=key).input(value)
        else:
            at.number_input(key=key).set_value(value)
    return at.run()


# -- every page renders -----------------------------------------------------------------------

@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_on_an_empty_store(lab, page):
    at = open_page(page)
    sidebar = texts(at.sidebar.warning)
    assert "DEMO set" in sidebar and "IMDB_DATA=/path/to/aclImdb_v1.tar.gz" in sidebar
    assert "No training job running or queued." in texts(at.sidebar.caption)
    if page == "data":
        assert at.title[0].value == "The data"
        assert "IMDB_DATA=/path/to/aclImdb_v1.tar.gz" in texts(at.warning)
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Training reviews"] == "2,000" and metrics["Test reviews"] == "2,000"
        assert "of the train reviews are longer than maxlen = 500" in texts(at.caption)
        assert len(at.html) == 3  # three sample reviews as encoded indices
        assert "<start>" not in at.html[0].value and "&lt;start&gt;" in at.html[0].value
    elif page == "train":
        assert {m.label for m in at.metric} >= {"Parameters", "Estimated time"}
        assert not at.error
        assert at.button(key="train_launch").disabled is False
    elif page == "compare":
        assert "No runs yet" in texts(at.info)
    else:
        assert "No completed run yet" in texts(at.info)


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_with_a_stored_run(lab_with_run, page):
    store, run_id = lab_with_run
    at = open_page(page, {"run": run_id} if page == "train" else None)
    if page == "train":
        assert "Completed: test accuracy" in texts(at.success)
        assert "tiny fixture run" in texts(at.subheader)
        assert at.main.progress[0].value == 100
        assert "train_stop" not in keys(at.button)  # nothing to stop
    elif page == "compare":
        table = at.dataframe[0].value
        assert list(table["Name"]) == ["tiny fixture run"]
        assert list(table["Status"]) == ["completed"]
        run = store.get(run_id)
        assert table["Test acc"][0] == pytest.approx(run.results["test_accuracy"])
        assert table["Params"][0] == run.results["params"]
        # the default selection (newest completed run) fills every section
        assert any("Model: " in c.value for c in at.code)  # its model summary
        assert {b.key for b in at.download_button} == {"compare_download_model",
                                                       "compare_download_metrics"}
    elif page == "predict":
        assert at.multiselect(key="predict_runs").value == [run_id]


@pytest.mark.parametrize("page", list(PAGES))
def test_a_missing_data_path_is_reported_on_every_page(lab, monkeypatch, tmp_path, page):
    missing = tmp_path / "nowhere" / "aclImdb_v1.tar.gz"
    monkeypatch.setenv("IMDB_DATA", str(missing))
    at = open_page(page)  # no exception anywhere
    assert f"IMDB_DATA={missing} does not exist" in texts(at.sidebar.error)
    if page in ("data", "train"):  # the pages that read the data say it too
        assert f"IMDB_DATA={missing} does not exist" in texts(at.main.error)


def test_train_page_without_run_param_attaches_to_nothing_when_idle(lab_with_run):
    at = open_page("train")
    assert query_run(at) is None  # the stored run is finished: nothing to attach to
    assert not at.success


# -- the Train form ---------------------------------------------------------------------------

def test_presets_fill_the_form(lab):
    at = open_page("train")
    at.button(key="train_preset_seed-cnn-lstm").click().run()
    assert_clean(at)
    assert at.selectbox(key="train_architecture").value == "cnn-lstm"
    assert at.number_input(key="train_epochs").value == 3
    assert at.number_input(key="train_conv_filters").value == 32
    assert at.text_input(key="train_name").value == "seed CNN + LSTM"
    params = {m.label: m.value for m in at.metric}["Parameters"]
    assert params == "216,405"  # the tutorial's CNN + LSTM at its settings
    assert "it reported 88.72 % test accuracy" in texts(at.caption)

    at.button(key="train_preset_seed-lstm").click().run()
    assert at.selectbox(key="train_architecture").value == "lstm"
    assert at.number_input(key="train_epochs").value == 2
    keys = {w.key for w in at.number_input}
    assert "train_conv_filters" not in keys and "train_dropout" not in keys  # unused by lstm
    assert {m.label: m.value for m in at.metric}["Parameters"] == "213,301"
    assert "it reported 87.48 % test accuracy" in texts(at.caption)


def test_every_architecture_shows_only_the_fields_it_uses(lab):
    at = open_page("train")
    for arch, spec in ARCHITECTURES.items():
        at.selectbox(key="train_architecture").set_value(arch).run()
        assert_clean(at)
        shown = {w.key[len("train_"):] for w in (*at.number_input, *at.selectbox, *at.checkbox)
                 } - {"seeds"}  # "Reproduce over N seeds": how many runs, not a config field
        assert shown == set(spec["uses"]) | set(COMMON_FIELDS) | {"architecture"}, arch
        assert spec["help"] in texts(at.caption)


@pytest.mark.parametrize("values, message", [
    ({"units": 0}, "units: 0 is out of range (allowed 1 to 1024)"),
    ({**TINY, "batch_size": 300}, "batch_size: 300 is larger than the 192 reviews left for "
                                  "training (allowed 1 to 192)"),
    ({"dropout": 1.5, "architecture": "lstm-dropout"}, "dropout: 1.5 is out of range"),
    ({"probes": "\n".join(f"sentence {i}" for i in range(9))},
     "probes: 9 sentences given, at most 8"),
])
def test_an_invalid_value_shows_its_message_and_starts_nothing(lab, values, message):
    at = fill_form(open_page("train"), values)
    assert_clean(at)
    errors = texts(at.error).replace("\\", "")  # messages are markdown-escaped
    assert message in errors
    assert at.button(key="train_launch").disabled
    assert lab.list_runs() == []


def test_launching_a_tiny_job_shows_progress_and_ends_completed(lab):
    at = fill_form(open_page("train"), {**TINY, "epochs": 2, "name": "apptest tiny"})
    assert not at.error
    at.button(key="train_launch").click().run()
    assert_clean(at)
    runs = lab.list_runs()
    assert len(runs) == 1 and runs[0].name == "apptest tiny"
    run_id = runs[0].id
    assert query_run(at) == run_id
    assert "apptest tiny" in texts(at.subheader)
    stages = {at.main.progress[0].text}
    assert "train_stop" in keys(at.button)  # stoppable while active

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while lab.get(run_id).active:
        assert time.monotonic() < deadline, lab.get(run_id).progress
        time.sleep(1.0)
        at.run()
        assert_clean(at)
        stages.add(at.main.progress[0].text)
    run = lab.get(run_id)
    assert run.status == COMPLETED, run.error
    time.sleep(POLL_S)  # the server's one job board shows the store at most one poll late
    at.run()
    assert_clean(at)
    assert "Completed: test accuracy" in texts(at.success)
    assert f"{100 * run.results['test_accuracy']:.2f} %" in texts(at.success)
    assert at.main.progress[0].value == 100
    assert "No training job running or queued." in texts(at.sidebar.caption)
    # the page showed the run's progress while it was active
    assert any(s.startswith(("Starting", "Loading", "Building", "Epoch", "Queued", "Training"))
               for s in stages), stages
    # and drew its curves (and the default probe sentences) from the stored metrics
    titles = " ".join(c.proto.spec for c in at.get("vega_lite_chart"))
    for title in ("Batch loss", "Batch accuracy", "Epoch loss", "Epoch accuracy",
                  "Probe sentences"):
        assert title in titles


def test_a_second_session_reattaches_to_the_running_job(lab):
    run_id = jobs.submit(lab, tiny_config(**LONG, name="background job"), n_train=2000,
                         n_test=2000)
    try:
        at = open_page("train")  # a new tab: no ?run= in the address
        assert query_run(at) == run_id
        assert "background job" in texts(at.subheader)
        assert at.main.progress
        # the sidebar lists it with its progress, linking back to it
        assert at.sidebar.progress
        assert "background job" in " ".join(link.label for link in at.sidebar.get("page_link"))
    finally:
        jobs.cancel(lab, run_id)


def test_a_queued_job_shows_its_place_and_stop_cancels_it(lab):
    first = jobs.submit(lab, tiny_config(**LONG, name="long job"), n_train=2000,
                        n_test=2000)
    queued = jobs.submit(lab, tiny_config(name="waiting job"), n_train=2000, n_test=2000)
    try:
        assert lab.get(queued).status == QUEUED  # one training slot (LAB_MAX_JOBS=1)
        at = open_page("train", {"run": queued})
        assert "waiting job" in texts(at.subheader)
        # its place in the fair queue and the wait estimated from the job ahead of it
        assert at.main.progress[0].text.startswith("Queued (position 1 in the queue, starts "
                                                   "in about")
        at.button(key="train_stop").click().run()
        assert_clean(at)
        assert lab.get(queued).status == CANCELLED
        at.run()
        assert "Stopped on request" in texts(at.warning)
        assert "train_stop" not in keys(at.button)
        assert lab.get(first).status in ACTIVE  # the other job is untouched
    finally:
        jobs.cancel(lab, first)


# -- Predict ----------------------------------------------------------------------------------

def score(at: AppTest, text: str) -> AppTest:
    at.text_area(key="predict_text").input(text)
    at.button(key="predict_score").click().run()
    assert_clean(at)
    return at


def test_predict_shows_the_models_probability(lab_with_run):
    store, run_id = lab_with_run
    review = "A wonderful film, the cast was superb and moving."
    at = score(open_page("predict"), review)
    predictor = Predictor.load(store, run_id)
    expected = predictor.predict([review])[0]
    metric = next(m for m in at.metric if m.label == "P(positive)")
    assert metric.value == f"{expected.probability:.1%}"
    assert metric.delta == expected.label
    attribution = next(h.value for h in at.html if 'class="attribution"' in h.value)
    for word in ("wonderful", "film", "cast", "superb", "moving"):
        assert f">{word}<" in attribution
    # the inspector shows the exact sequence: padding, start token, word indices
    codes = predictor.inspect(review)["padded"]
    n_pad = codes.index(1)
    assert f"[0 × {n_pad} (padding), 1, " in texts(at.code)


class _Markup(HTMLParser):
    """The tags and the visible text of an HTML fragment."""

    def __init__(self, body: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(body)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_typed_html_is_escaped(lab_with_run):
    review = "<script>alert(1)</script> a wonderful film <b>bold</b> <img src=x onerror=alert(1)>"
    at = score(open_page("predict"), review)
    bodies = [h.value for h in at.html] + [m.value for m in at.markdown]
    assert not any("<script" in b.lower() or "<img" in b.lower() or "<b>" in b for b in bodies)
    attribution = next(h.value for h in at.html if 'class="attribution"' in h.value)
    markup = _Markup(attribution)
    assert set(markup.tags) <= {"div", "span"}  # only the page's own markup
    assert review in "".join(markup.text)  # the typed text, shown as text, complete
    assert "&lt;" in attribution and "&gt;" in attribution


UNUSABLE_OR_LONG = [
    (" ".join(["wonderful film"] * 60), "the model reads only the last 40 tokens", "warning"),
    ("   ", "The review is empty", "error"),
    ("zzzq qqqz", "None of the 2 words is in the model's", "error"),
    ("!!! ... ???", "no words once punctuation is removed", "error"),
]


def test_unusable_or_long_reviews_give_clear_messages(lab_with_run):
    """Each review typed in turn on one Predict page (one page load and inference process,
    not one per review): an unusable one gets its message and no score, even right after a
    scored one; a long one is scored, with the warning."""
    at = open_page("predict")
    for review, message, kind in UNUSABLE_OR_LONG:
        score(at, review)
        assert message in texts(getattr(at, kind)), review
        scored = any(m.label == "P(positive)" for m in at.metric)
        assert scored == (kind == "warning"), review


def test_batch_mode_scores_an_uploaded_csv_and_refuses_oversized_files(lab_with_run):
    at = open_page("predict")
    csv = b"id,review\n1,a wonderful film\n2,a boring waste\n3,\xc3\xa9l\xc3\xa9gant and superb\n"
    at.file_uploader(key="predict_upload").set_value(("reviews.csv", csv, "text/csv")).run()
    assert_clean(at)
    table = at.dataframe[-1].value
    assert list(table["review"]) == ["a wonderful film", "a boring waste", "élégant and superb"]
    prob = [c for c in table.columns if c.startswith("P(positive)")]
    assert len(prob) == 1 and table[prob[0]].between(0, 1).all()
    assert "predict_download" in keys(at.download_button)

    too_many = "\n".join(f"review {i} was great" for i in range(1001)).encode()
    at.file_uploader(key="predict_upload").set_value(("many.txt", too_many, "text/plain")).run()
    assert "many.txt has 1,001 reviews; at most 1,000 are scored at once" in texts(at.error)


# -- Compare: manage runs ---------------------------------------------------------------------

def test_compare_renames_and_deletes_a_run(lab_with_run):
    store, run_id = lab_with_run
    at = open_page("compare")
    at.text_input(key=f"compare_name_{run_id}").input("renamed run")
    at.button(key="compare_rename").click().run()
    assert_clean(at)
    assert store.get(run_id).name == "renamed run"
    assert list(at.dataframe[0].value["Name"]) == ["renamed run"]

    assert at.button(key="compare_delete").disabled  # not without the confirmation
    at.checkbox(key="compare_confirm").check().run()
    at.button(key="compare_delete").click().run()
    assert_clean(at)
    assert store.list_runs() == []
    assert not store.run_dir(run_id).exists()
    assert "No runs yet" in texts(at.info)


def test_the_sidebar_lists_a_short_queue(lab):
    """Thirty tabs redraw the sidebar every 2 s while jobs are active: it lists the running
    run and the next three queued ones, and counts the rest."""
    ids = [jobs.submit(lab, tiny_config(**LONG, name=f"q{i}"), n_train=2000, n_test=2000,
                       start=False) for i in range(7)]
    try:
        at = open_page("data")
        links = [link.label for link in at.sidebar.get("page_link")]
        assert sum(label.startswith("q") for label in links) == 4, links
        assert "… and 3 more queued." in texts(at.sidebar.caption)
    finally:
        for run_id in ids:
            jobs.cancel(lab, run_id)


def test_the_ngram_presets_fill_the_form(lab):
    """The baselines beyond the tutorial have buttons too; one fills its architecture."""
    at = open_page("train")
    at.button(key="train_preset_nbsvm-bigram").click().run()
    assert_clean(at)
    assert at.selectbox(key="train_architecture").value == "nbsvm-bigram"
    assert at.number_input(key="train_bigrams").value == 400_000
