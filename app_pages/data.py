"""Data: which reviews the lab uses, how long they are, which words they use and how a
review becomes the index sequence a model reads."""

from __future__ import annotations

import streamlit as st

from app_pages import views
from app_pages.common import data_key
from core.data import DataError, Dataset, load_dataset
from core.text import readable

K = "data_"  # every session_state key of this page starts with it
SAMPLES = 3  # reviews shown at once


@st.cache_resource(show_spinner="Loading the reviews (the first time encodes them)…",
                   max_entries=2)
def _dataset(imdb_data: str, cache: str) -> Dataset:
    """One loaded dataset per source, shared by the sessions (read only): a new sample
    page or maxlen re-encodes three reviews, not the 50,000 from the disk cache."""
    return load_dataset()


@st.cache_data(show_spinner=False, max_entries=4)
def _overview(imdb_data: str, cache: str) -> dict:
    ds = _dataset(imdb_data, cache)
    return {"summary": ds.summary(), "is_demo": ds.source.is_demo,
            "lengths": {"train": ds.train.lengths(), "test": ds.test.lengths()},
            "top": views.word_counts(ds.train.flat, ds.words, 30)}


@st.cache_data(show_spinner="Reading review texts…", max_entries=64)
def _samples(imdb_data: str, cache: str, split: str, start: int, top_words: int,
             maxlen: int) -> list[dict]:
    ds = _dataset(imdb_data, cache)
    s, texts = ds.split(split), ds.texts(split)
    out = []
    for i in range(start, min(start + SAMPLES, len(s))):
        tokens, n_pad = views.encoded_tokens(s.codes(i).tolist(), ds.words, top_words, maxlen)
        out.append({"i": i, "text": texts[i], "label": int(s.labels[i]),
                    "rating": int(s.ratings[i]), "tokens": tokens, "n_pad": n_pad,
                    "padded": [0] * n_pad + [t["code"] for t in tokens if t["kind"] != "cut"]})
    return out


def render() -> None:
    """The page: the source and its numbers, review lengths, frequent words, samples."""
    st.title("The data")
    key = data_key()
    try:
        info = _overview(*key)
    except DataError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    summary = info["summary"]
    _source(summary, info["is_demo"])
    _counts(summary)
    maxlen = _lengths(info)
    _frequent_words(info["top"])
    _sample_reviews(key, summary, maxlen)


def _source(summary: dict, is_demo: bool) -> None:
    """Which reviews these are and why (the demo set says how to use the real ones)."""
    label = views.md_escape(summary["label"])
    where = f" — `{summary['path']}`" if summary["path"] else ""
    if is_demo:
        st.warning(f"**{label}**: {views.md_escape(summary['reason'])}.\n\nThese reviews are "
                   "generated from a small word list so the lab works offline; accuracies here "
                   "say nothing about IMDB. To use the real reviews, point the app at "
                   "Stanford's archive and restart it:\n\n"
                   "`IMDB_DATA=/path/to/aclImdb_v1.tar.gz streamlit run app.py`\n\n"
                   "(an extracted `aclImdb/` folder works too, or `IMDB_DATA=keras` online).",
                   icon=":material/science:")
    else:
        st.info(f"**{label}**{where}  \n{views.md_escape(summary['reason'])}",
                icon=":material/dataset:")


def _counts(summary: dict) -> None:
    """Reviews, vocabulary, lengths and the label balance."""
    tr, te = summary["train"], summary["test"]
    c = st.columns(5)
    c[0].metric("Training reviews", f"{tr['reviews']:,}")
    c[1].metric("Test reviews", f"{te['reviews']:,}")
    c[2].metric("Distinct words", f"{summary['vocabulary']:,}",
                help="In the training reviews; top_words keeps the most frequent ones.")
    c[3].metric("Median length", f"{tr['median_words']:.0f} words",
                help=f"Mean {tr['mean_words']:.0f}, 90th percentile {tr['p90_words']:.0f}, "
                     f"longest {tr['max_words']:,} (training reviews).")
    c[4].metric("Positive (train)", views.fmt_pct(tr["positive"] / max(tr["reviews"], 1), 1))
    st.altair_chart(views.label_chart(views.label_balance(summary)), width="stretch")


def _lengths(info: dict) -> int:
    """The length histogram against a maxlen the visitor picks (returned) and the share
    of reviews it truncates."""
    st.subheader("Review lengths")
    a, b = st.columns([1, 1])
    maxlen = a.number_input("maxlen (tokens the model reads)", min_value=1, max_value=5000,
                            value=500, step=50, key=K + "maxlen",
                            help="The tutorial cuts/pads every review to 500 tokens.")
    split = b.radio("Split", ["train", "test"], horizontal=True, key=K + "split")
    lengths = info["lengths"][split]
    share = views.truncated_share(lengths, maxlen)
    st.altair_chart(views.length_chart(views.length_histogram(lengths, maxlen), maxlen),
                    width="stretch")
    st.caption(f"**{views.fmt_pct(share, 1)}** of the {split} reviews are longer than "
               f"maxlen = {maxlen} tokens (the start token counts as one) and lose their "
               "*first* words: Keras pads and truncates at the front ('pre').")
    return maxlen


def _frequent_words(top) -> None:
    """The most frequent words and how ranks become indices."""
    st.subheader("Most frequent words")
    left, right = st.columns([3, 2], gap="large")
    left.altair_chart(views.words_chart(top), width="stretch")
    right.markdown("A word's index is its frequency rank **+ 3**; the first indices are "
                   "reserved:\n\n- `0` padding\n- `1` start of review\n- `2` out of "
                   "vocabulary (rank beyond top_words)\n- `3` unused\n\nso the most frequent "
                   "word is `4`.")
    right.dataframe(top, hide_index=True, height=260)


def _sample_reviews(key: tuple[str, str], summary: dict, maxlen: int) -> None:
    """A few reviews: their text and the index sequence a model reads."""
    st.subheader("Sample reviews")
    a, b, c = st.columns(3)
    s_split = a.radio("From", ["train", "test"], horizontal=True, key=K + "sample_split")
    n = summary[s_split]["reviews"]
    start = b.number_input("First review #", min_value=0, max_value=max(0, n - 1), value=0,
                           step=SAMPLES, key=K + "sample_start")
    top_words = c.number_input("top_words", min_value=4, max_value=200_000, value=5000,
                               step=1000, key=K + "top_words",
                               help="Words ranked beyond this are encoded as 2 (OOV).")
    for s in _samples(*key, s_split, int(start), int(top_words), int(maxlen)):
        with st.container(border=True):
            sentiment = "positive" if s["label"] else "negative"
            rating = f", {s['rating']}/10 stars" if s["rating"] else ""
            st.markdown(f"**Review #{s['i']}** · {sentiment}{rating} · "
                        f"{len(s['tokens']) - 1} words")
            with st.container(height=120):
                st.text(readable(s["text"]))
            st.caption("As indices (top: word, bottom: index). Blue = 1 (start), orange dashed "
                       "= 2 (OOV), struck through = cut by maxlen; padding 0 fills the front.")
            st.html(views.codes_html(s["tokens"], s["n_pad"]))
            st.code(views.compact_sequence(s["padded"]), language=None, wrap_lines=True)


render()
