"""Predict's 'look inside' sections: integrated gradients beside occlusion, and the
LSTM's running sentiment, hidden state and gates. Not a page (predict.py calls these); the
numbers come from the inference process (TensorFlow stays out of the web server)."""

from __future__ import annotations

import streamlit as st

from app_pages import inside_views, views
from app_pages.common import inference
from core.explain import INSIDE_ARCHITECTURES
from core.predict import PredictError
from core.store import RunNotFound

K = "predict_"  # Predict's session_state prefix


@st.cache_data(max_entries=128, show_spinner="Integrating gradients…")
def _integrated_gradients(home: str, run_id: str, text: str) -> dict:
    return inference(home).integrated_gradients(run_id, text)


@st.cache_data(max_entries=64, show_spinner="Running the LSTM step by step…")
def _inside(home: str, run_id: str, text: str) -> dict:
    return inference(home).inside(run_id, text)


def integrated_gradients_section(home: str, run_id: str, text: str) -> None:
    st.markdown("**Integrated gradients**")
    try:
        ig = _integrated_gradients(home, run_id, text)
    except (PredictError, RunNotFound) as exc:
        st.info(f"Integrated gradients are not available for this model: {exc}",
                icon=":material/info:")
        return
    st.html(views.attribution_html(text, ig["words"]))
    ok, line = inside_views.completeness_line(ig)
    st.caption("Each word's share of f(review) − f(all padding): the embeddings are moved "
               f"from the padding's to the review's in {ig['steps']} steps and the "
               "gradient of P(positive) along the way, times the change, is summed over "
               "the embedding dimension. Unknown words (dotted) count too: their marker's "
               "embedding is not the padding's.")
    (st.caption if ok else st.warning)(line)
    pushes = views.top_pushes(ig["words"])
    if not pushes.empty:
        st.dataframe(pushes.rename(columns={"effect on P(positive)": "attribution"}),
                     hide_index=True, column_config={
                         "attribution": st.column_config.NumberColumn(format="%+.4f")},
                     key=K + "ig_top")


def inside_section(home: str, run_id: str, text: str, architecture: str) -> None:
    with st.expander("Inside the LSTM: running sentiment, hidden state, gates"):
        if architecture not in INSIDE_ARCHITECTURES:
            st.info(f"Shown for one-directional LSTMs reading one word per step "
                    f"({', '.join(INSIDE_ARCHITECTURES)}); this model is {architecture}.",
                    icon=":material/info:")
            return
        try:
            inside = _inside(home, run_id, text)
        except (PredictError, RunNotFound) as exc:
            st.error(f"Cannot look inside this model: {exc}")
            return
        n_units = inside["h"].shape[1]
        st.markdown("**Running sentiment**: P(positive) if the review ended after each word "
                    "(the output layer applied to the LSTM's hidden state there).")
        st.altair_chart(inside_views.running_chart(inside), width="stretch")
        st.caption(f"Layer {inside['layer']}; {inside['n_pad']} padding steps before the start "
                   f"token are not drawn; {inside['n_truncated']} tokens cut by maxlen. The last "
                   f"point is the prediction, {inside['p']:.3f}. Computed in "
                   f"{inside['seconds'] * 1000:.0f} ms.")
        shown = st.slider("Hidden units shown", 1, n_units, min(24, n_units),
                          key=K + "inside_units")
        st.altair_chart(inside_views.heatmap_chart(inside, shown), width="stretch")
        order = inside_views.units_by_variation(inside)
        unit = st.selectbox("Gates of unit", order, key=K + "inside_unit",
                            help="Units ordered from the most varying over this review.")
        st.altair_chart(inside_views.gates_chart(inside, unit), width="stretch")
        st.caption("c_t = f·c_(t−1) + i·g and h_t = o·tanh(c_t): the forget gate keeps the old "
                   "cell state, the input gate lets the new candidate in, the output gate "
                   "decides how much of the cell shows in h.")


def ngram_inspector(info: dict) -> None:
    """The n-gram features of the tokenization inspector (n-gram models only)."""
    if not info.get("ngrams"):
        return
    how = {"append": "appended after the words, in order",
           "inline": "each right after its second word, in reading order"}.get(
        info["ngrams"], "with the distinct words, as one sorted set of binary features")
    st.caption(f"This model also reads word pairs: {len(info['bigrams'])} of the review's "
               f"bigrams are in its vocabulary (index = top words + rank), {how}; "
               f"{info['features']} features in all, cut or padded to maxlen {info['maxlen']}.")
    if info["bigrams"]:
        st.dataframe([{"index": i, "bigram": b} for i, b in info["bigrams"]], hide_index=True,
                     height=min(320, 38 + 35 * len(info["bigrams"])), key=K + "bigrams")
