"""Predict: score your own reviews with one or several trained models, see which words
push each prediction, the exact index sequence the model reads, and score a file."""

from __future__ import annotations

import time

import streamlit as st

from app_pages import views
from app_pages.common import inference, me, run_store, visible_runs
from app_pages.explain import inside_section, integrated_gradients_section, ngram_inspector
from core import paths
from core.predict import PredictError
from core.store import COMPLETED, RunNotFound

K = "predict_"  # every session_state key of this page starts with it
MAX_MODELS = 4  # side by side
RESTART_NOTICE_S = 120  # how long the page mentions that the inference process restarted
EXAMPLE = ("The acting was wonderful and the story was moving, but the ending felt "
           "predictable and a bit dull.")

# Models live in the inference process (core/inference.py), loaded once and shared by every
# session; these caches only keep its answers, so a rerun never asks twice.


@st.cache_data(max_entries=512, show_spinner="Scoring…")
def _predict(home: str, run_id: str, texts: tuple[str, ...]) -> list[dict]:
    return inference(home).predict(run_id, list(texts))


@st.cache_data(max_entries=128, show_spinner="Measuring each word's effect…")
def _attribution(home: str, run_id: str, text: str):
    return inference(home).attribution(run_id, text)


@st.cache_data(max_entries=128, show_spinner=False)
def _inspect(home: str, run_id: str, text: str) -> dict:
    return inference(home).inspect(run_id, text)


def _restart_notice(home: str) -> None:
    at = inference(home).restarted_at
    if at is not None and time.time() - at < RESTART_NOTICE_S:
        st.info(f"The inference process had stopped and was restarted at "
                f"{time.strftime('%H:%M:%S', time.localtime(at))}; models are loaded again "
                "on first use.", icon=":material/restart_alt:")


def _explain(home: str, text: str, scored: list[str], labels: dict[str, str]) -> None:
    """Which words push the prediction (occlusion) and the tokenization inspector."""
    st.subheader("Which words push the prediction")
    target = scored[0]
    if len(scored) > 1:
        target = st.selectbox("Explain the prediction of", scored,
                              format_func=labels.get, key=K + "explain")
    try:
        p, words = _attribution(home, target, text)
        info = _inspect(home, target, text)
    except (PredictError, RunNotFound) as exc:
        st.error(f"This model cannot be explained: {exc}")
        return
    st.html(views.attribution_html(text, words))
    st.caption(f"Each word is replaced by the unknown-word index (2) in turn; the "
               f"colour shows how much P(positive) = {p:.3f} drops (green: the word "
               "pushes towards positive) or rises (red) without it.")
    pushes = views.top_pushes(words)
    if not pushes.empty:
        st.dataframe(pushes, hide_index=True, column_config={
            "effect on P(positive)": st.column_config.NumberColumn(format="%+.4f")})
    integrated_gradients_section(home, target, text)
    inside_section(home, target, text, run_store(home).get(target).config.architecture)

    with st.expander("Tokenization inspector: the exact index sequence"):
        st.caption(f"maxlen {info['maxlen']}, vocabulary {info['vocab_size']:,} words. "
                   f"{len(info['tokens'])} words → {len(info['codes'])} indices with the "
                   f"start token 1; {info['n_oov']} unknown (2); "
                   f"{info['n_truncated']} cut at the front; {info['n_pad']} padding "
                   "zeros at the front. A word of frequency rank r is r + 3.")
        st.code(views.compact_sequence(info["padded"]), language=None, wrap_lines=True)
        st.dataframe(views.inspector_frame(info), hide_index=True, height=320)
        ngram_inspector(info)


def render() -> None:
    """The page: pick models, score a typed review (and explain it), score a file."""
    st.title("Predict")
    home = str(paths.lab_home())
    store = run_store(home)
    actor = me(store)
    runs = visible_runs(store, actor, [COMPLETED])
    if not runs:
        st.info("No completed run yet: train a model first.", icon=":material/info:")
        st.page_link("app_pages/train.py", label="Train a model", icon=":material/model_training:")
        return
    labels = {r.id: views.owned_label(r, actor.name) for r in runs}
    chosen = _models(runs, labels)
    if not chosen:
        st.caption("Choose at least one model.")
        return
    _review(home, chosen, labels)
    st.divider()
    _score_file(home, chosen, labels)


def _models(runs: list, labels: dict[str, str]) -> list[str]:
    """The models picker (a "Try it" link's run first); returns the chosen run ids."""
    chosen = [r for r in st.session_state.get(K + "runs", [runs[0].id]) if r in labels]
    wanted = st.query_params.get("run")  # "Try it" links from the Train page
    if wanted in labels:
        chosen = [wanted] + [r for r in chosen if r != wanted][:MAX_MODELS - 1]
        del st.query_params["run"]  # once: the user may deselect it afterwards
    st.session_state[K + "runs"] = chosen  # (runs deleted since are dropped)
    return st.multiselect("Models", list(labels), key=K + "runs", format_func=labels.get,
                          max_selections=MAX_MODELS,
                          help="Completed runs, newest first; pick up to four to compare.")


def _review(home: str, chosen: list[str], labels: dict[str, str]) -> None:
    """The review form; once scored, each model's prediction and the explanation."""
    with st.form(K + "form"):
        st.text_area("Your review", key=K + "text", height=140, placeholder=EXAMPLE,
                     help="Typed text is tokenized exactly as in training: lowercase words, "
                          "punctuation removed.")
        if st.form_submit_button("Score", key=K + "score", type="primary",
                                 icon=":material/send:"):
            st.session_state[K + "scored"] = st.session_state[K + "text"]
    text = st.session_state.get(K + "scored")
    if text is None:
        return
    cols = st.columns(len(chosen))
    scored = [run_id for col, run_id in zip(cols, chosen)
              if _prediction(home, col, run_id, text, labels)]
    _restart_notice(home)
    if scored:
        _explain(home, text, scored, labels)


def _prediction(home: str, col, run_id: str, text: str, labels: dict[str, str]) -> bool:
    """One model's prediction for ``text`` in its column; whether it scored it."""
    ok = False
    with col, st.container(border=True):
        st.markdown(f"**{views.md_escape(labels[run_id])}**")
        try:
            pred = _predict(home, run_id, (text,))[0]
        except (PredictError, RunNotFound, OSError) as exc:
            st.error(f"This model cannot be used: {exc}")
            return False
        if pred["error"]:
            st.error(pred["error"], icon=":material/block:")
        else:
            ok = True
            p = pred["probability"]
            st.metric("P(positive)", f"{p:.1%}", delta=pred["label"],
                      delta_color="normal" if p >= 0.5 else "inverse",
                      delta_arrow="off")
            st.progress(p)
            st.caption(f"{pred['words']} words · {pred['oov_words']} unknown · "
                       f"{pred['truncated_tokens']} cut by maxlen")
        for w in pred["warnings"]:
            st.warning(w, icon=":material/warning:")
    return ok


def _score_file(home: str, chosen: list[str], labels: dict[str, str]) -> None:
    """An uploaded file of reviews scored by every chosen model, as a table to download."""
    st.subheader("Score a file")
    st.caption(f"A .csv (column 'review' or 'text', else the first column) or a .txt (one "
               f"review per line); up to {views.UPLOAD_MAX_BYTES // 2**20} MB and "
               f"{views.UPLOAD_MAX_ROWS:,} reviews.")
    upload = st.file_uploader("Reviews file", type=["csv", "txt"], key=K + "upload",
                              max_upload_size=views.UPLOAD_MAX_BYTES // 2**20)
    if upload is None:
        return
    reviews, error = views.parse_reviews_upload(upload.name, upload.getvalue())
    if error:
        st.error(error, icon=":material/error:")
        return
    results = {}
    with st.spinner(f"Scoring {len(reviews):,} reviews…"):
        for run_id in chosen:
            try:
                results[labels[run_id]] = _predict(home, run_id, tuple(reviews))
            except (PredictError, RunNotFound, OSError) as exc:
                st.error(views.md_escape(f"{labels[run_id]}: {exc}"))
    table = views.predictions_frame(reviews, results)
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f")
        for c in table.columns if c.startswith("P(positive)")})
    st.download_button("Download predictions (.csv)",
                       data=table.to_csv(index=False).encode("utf-8"),
                       file_name="predictions.csv", mime="text/csv", on_click="ignore",
                       key=K + "download", icon=":material/download:")


render()
