"""Data sources: the archive read in place equals the extracted folder, resolution order,
the disk cache, the demo set, and the real archive when it is present."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import ARCHIVE, needs_archive
from core import data
from core.text import OOV, START, pad_pre, tokenize

REVIEWS = {
    ("train", "pos", 1, 9): "A wonderful film.<br /><br />Great acting!",
    ("train", "pos", 2, 8): "great great story, wonderful cast",
    ("train", "neg", 3, 2): "Awful. A waste of time; awful acting.",
    ("train", "neg", 4, 1): "boring boring film",
    ("test", "pos", 5, 10): "wonderful story",
    ("test", "neg", 6, 3): "an awful, unseenword film",
}


def _write_folder(root):
    for (split, lab, rid, rating), text in REVIEWS.items():
        d = root / "aclImdb" / split / lab
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{rid}_{rating}.txt").write_text(text, encoding="utf-8")
    return root / "aclImdb"


def _write_tar(path):
    with tarfile.open(path, "w:gz") as tar:
        for (split, lab, rid, rating), text in REVIEWS.items():
            blob = text.encode()
            info = tarfile.TarInfo(f"aclImdb/{split}/{lab}/{rid}_{rating}.txt")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_archive_read_in_place_equals_extracted_folder(tmp_path):
    folder = _write_folder(tmp_path / "x")
    archive = _write_tar(tmp_path / "aclImdb_v1.tar.gz")
    a = data.load_dataset(data.SourceInfo("aclimdb", str(folder), "t"), tmp_path / "c1")
    b = data.load_dataset(data.SourceInfo("aclimdb", str(archive), "t"), tmp_path / "c2")
    assert a.words == b.words
    for split in ("train", "test"):
        np.testing.assert_array_equal(a.split(split).flat, b.split(split).flat)
        np.testing.assert_array_equal(a.split(split).labels, b.split(split).labels)
    assert (len(a.train), len(a.test)) == (4, 2)
    assert int(a.train.labels.sum()) == 2


def test_encoding_ranks_training_words_and_marks_start_and_oov(tmp_path):
    ds = data.load_dataset(data.SourceInfo("aclimdb", str(_write_folder(tmp_path)), "t"),
                           tmp_path / "c")
    counts = {}
    for (split, *_), text in REVIEWS.items():
        if split == "train":
            for w in tokenize(text):
                counts[w] = counts.get(w, 0) + 1
    assert ds.words[:3] == sorted(counts, key=lambda w: (-counts[w], w))[:3]
    enc = ds.encoder(top_words=6, maxlen=8)
    texts = ds.texts("test")
    x, y = ds.arrays("test", top_words=6, maxlen=8)
    for i, text in enumerate(texts):
        codes = enc.codes(tokenize(text))
        assert codes[0] == START
        np.testing.assert_array_equal(x[i], pad_pre([codes], 8)[0])
    assert (x == OOV).any()  # "unseenword" is not a training word


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    src = data.SourceInfo("aclimdb", str(_write_tar(tmp_path / "a.tar.gz")), "t")
    first = data.load_dataset(src, tmp_path / "c")
    assert first.cache_file.exists()

    def boom(*_a, **_k):
        raise AssertionError("the source was parsed again")

    monkeypatch.setattr(data, "_read_aclimdb", boom)
    second = data.load_dataset(src, tmp_path / "c")
    np.testing.assert_array_equal(second.train.flat, first.train.flat)


def test_writers_that_find_the_cache_missing_at_once_all_succeed(tmp_path, monkeypatch):
    """Jobs started together (several Ray executors, warm workers) each build the missing
    cache; every write and rename must succeed and leave one whole cache file."""
    src = data.SourceInfo("aclimdb", str(_write_tar(tmp_path / "a.tar.gz")), "t")
    written = threading.Barrier(4)
    replace = os.replace

    def replace_together(tmp, path):
        written.wait(timeout=30)  # all four have written before any renames
        replace(tmp, path)

    monkeypatch.setattr(os, "replace", replace_together)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: data.load_dataset(src, tmp_path / "c"), range(4)))
    assert [p.name for p in (tmp_path / "c").iterdir()] == [loaded[0].cache_file.name]
    again = data.load_dataset(src, tmp_path / "c")
    np.testing.assert_array_equal(again.train.flat, loaded[0].train.flat)


def test_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_OFFLINE", "1")
    monkeypatch.setenv("IMDB_DATA", "demo")
    assert data.resolve_source().kind == "demo"
    monkeypatch.setenv("IMDB_DATA", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(data.DataError, match="does not exist"):
        data.resolve_source()
    archive = _write_tar(tmp_path / "aclImdb_v1.tar.gz")
    monkeypatch.setenv("IMDB_DATA", str(archive))
    src = data.resolve_source()
    assert (src.kind, src.reason) == ("aclimdb", "IMDB_DATA is set")
    # No IMDB_DATA: a local copy in the usual places, else (offline) the demo set.
    monkeypatch.delenv("IMDB_DATA")
    monkeypatch.setattr(data, "_candidates", lambda: [tmp_path / "nothing", archive])
    assert data.resolve_source().path == str(archive)
    monkeypatch.setattr(data, "_candidates", lambda: [tmp_path / "nothing"])
    monkeypatch.setattr(data, "_keras_cached", lambda: False)
    src = data.resolve_source()
    assert src.kind == "demo" and "offline" in src.reason and src.is_demo
    assert "DEMO" in src.label()


def test_keras_source_keeps_every_review_and_the_word_index(tmp_path, monkeypatch):
    import keras

    xtr = [[1, 4, 5, 9000], [1, 6] * 400]  # a long review is kept, not dropped
    monkeypatch.setattr(keras.datasets.imdb, "load_data",
                        lambda **kw: ((xtr, np.array([1, 0])), ([[1, 4]], np.array([1]))))
    monkeypatch.setattr(keras.datasets.imdb, "get_word_index",
                        lambda: {"the": 1, "and": 2, "a": 3})
    ds = data.load_dataset(data.SourceInfo("keras", "", "t"), tmp_path)
    assert ds.words == ["the", "and", "a"] and len(ds.train) == 2
    x, _ = ds.arrays("train", top_words=5000, maxlen=500)
    assert x[0].tolist()[-4:] == [1, 4, 5, OOV]  # 9000 >= top_words -> OOV, like num_words
    assert (x[1] != 0).all()


def test_demo_set_is_balanced_and_labelled(monkeypatch, tmp_path):
    ds = data.load_dataset(data.SourceInfo("demo", "", "t"), tmp_path)
    assert len(ds.train) == len(ds.test) == data.DEMO_SIZE
    assert int(ds.train.labels.sum()) == data.DEMO_SIZE // 2
    assert ds.source.is_demo and "DEMO" in ds.summary()["label"]


@needs_archive
def test_real_archive_counts_and_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("real")
    src = data.SourceInfo("aclimdb", str(ARCHIVE), "t")
    ds = data.load_dataset(src, cache)
    s = ds.summary()
    assert (s["train"]["reviews"], s["test"]["reviews"]) == (25_000, 25_000)
    assert s["train"]["positive"] == s["train"]["negative"] == 12_500
    assert 220 < s["train"]["mean_words"] < 245  # README of the copy: 231.5 whitespace tokens
    x, y = ds.arrays("train", 5000, 500)
    assert x.shape == (25_000, 500) and x.max() == 4999 and set(np.unique(y)) == {0.0, 1.0}
    assert ds.words[:4] == ["the", "and", "a", "of"]
    again = data.load_dataset(src, cache)
    np.testing.assert_array_equal(again.test.flat, ds.test.flat)
