"""Predict's 'look inside' sections (app_pages/explain.py) on the tiny run, headless."""

from __future__ import annotations

from test_pages import open_page, score, texts


def test_predict_shows_integrated_gradients_and_inside_the_lstm(lab_with_run):
    review = "A wonderful film, the cast was superb and moving."
    at = score(open_page("predict"), review)
    captions = texts(at.caption)
    assert "Completeness: the attributions sum to" in captions and "within 5%" in captions
    assert sum('class="attribution"' in h.value for h in at.html) == 2  # occlusion + IG
    assert "The last point is the prediction" in captions
    unit = at.selectbox(key="predict_inside_unit")
    unit.set_value(unit.options[-1] if isinstance(unit.options[-1], int) else int(
        unit.options[-1])).run()
    assert not at.exception
    at.slider(key="predict_inside_units").set_value(2).run()
    assert not at.exception


def test_an_ngram_model_shows_its_bigrams_and_no_integrated_gradients(lab):
    from conftest import tiny_config, wait_for
    from core import jobs
    from core.store import COMPLETED

    run_id = jobs.submit(lab, tiny_config(architecture="nbsvm-bigram", maxlen=80, bigrams=300))
    assert wait_for(lab, run_id).status == COMPLETED
    at = score(open_page("predict"), "a wonderful film, a wonderful cast")
    assert "This model also reads word pairs" in texts(at.caption)
    assert "Integrated gradients are not available" in texts(at.info)
    assert "this model is nbsvm-bigram" in texts(at.info)  # no 'inside the LSTM' either
