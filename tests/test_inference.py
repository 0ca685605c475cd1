"""The inference process: the web server's predictions come from it, never from a Keras
model in its own process; it must agree with Keras, survive its own death and name a
deleted run."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from core import inference
from core.predict import PredictError, load_run_model
from core.store import RunNotFound
from core.text import Encoder

REVIEWS = ["a wonderful moving film", "boring dull and predictable",
           "the acting was great but the ending was awful " * 30, "film"]


@pytest.fixture
def client(lab_with_run):
    store, run_id = lab_with_run
    client = inference.InferenceClient(store.home)
    yield client, store, run_id
    inference.stop(store.home)


def test_probabilities_equal_keras_predict(client):
    client, store, run_id = client
    got = [p["probability"] for p in client.predict(run_id, REVIEWS)]
    encoder = Encoder.load(store.encoder_path(run_id))
    model = load_run_model(store, run_id)
    want = model.predict(encoder.encode_batch(REVIEWS), verbose=0).ravel()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    p, words = client.attribution(run_id, REVIEWS[0])
    assert p == pytest.approx(got[0], abs=1e-6) and [w.word for w in words] == REVIEWS[0].split()
    info = client.inspect(run_id, REVIEWS[1])
    assert info["tokens"] == REVIEWS[1].split() and len(info["padded"]) == encoder.maxlen


def test_a_dead_process_is_restarted_and_says_so(client):
    client, store, run_id = client
    first = client.predict(run_id, REVIEWS[:1])
    pid = client.pid()
    assert pid and client.restarted_at is None
    os.kill(pid, signal.SIGKILL)
    assert client.predict(run_id, REVIEWS[:1]) == first
    assert client.restarted_at is not None and client.pid() not in (None, pid)


def test_a_deleted_or_unfinished_run_gives_a_clear_error(client):
    client, store, run_id = client
    client.predict(run_id, REVIEWS[:1])  # loaded and cached in the process
    store.delete(run_id)
    with pytest.raises(RunNotFound, match=run_id):
        client.predict(run_id, REVIEWS[:1])
    with pytest.raises(PredictError, match="unknown request"):
        client._call("exec", run_id, "import os")
