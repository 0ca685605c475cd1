"""IMDB review data from three sources, one encoding, cached on disk.

Sources:
- ``aclimdb``: Stanford's Large Movie Review Dataset, an extracted ``aclImdb/`` folder or
  the ``.tar.gz`` archive read in place.
- ``keras``: ``keras.datasets.imdb.load_data`` + ``get_word_index`` (downloads on first use:
  the exact data the tutorial used).
- ``demo``: a small synthetic set generated here, so the app starts and trains with
  neither internet nor the archive. It is labelled as a demo everywhere it is shown.

Whatever the source, reviews are stored as Keras imdb codes (start token, word rank + 3)
without a vocabulary cut, so any ``top_words``/``maxlen`` is a cheap view of one cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import paths
from core.text import INDEX_FROM, OOV, START, Encoder, pad_flat, rank_words, tokenize

# Bump when the way text becomes codes changes, so stale caches are not reused.
ENCODING_VERSION = 2
# Keras shuffles imdb with this seed; we shuffle our sources the same way.
SHUFFLE_SEED = 113
# Stanford's archive, for users who are online and have no copy.
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
DEMO_SIZE = 2000  # demo reviews per split
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


class DataError(RuntimeError):
    """No usable data: the message says what was tried and what to do."""


@dataclass
class SourceInfo:
    kind: str  # "aclimdb" | "keras" | "demo"
    path: str  # archive/folder path, or "" for keras/demo
    reason: str  # why this source was chosen, for the sidebar and `python -m core data`

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"

    def label(self) -> str:
        if self.kind == "aclimdb":
            return f"Stanford aclImdb ({Path(self.path).name})"
        if self.kind == "keras":
            return "keras.datasets.imdb"
        return "DEMO set (synthetic reviews, not IMDB)"


@dataclass
class Split:
    """One split as ragged codes: review i is ``flat[offsets[i]:offsets[i+1]]``."""

    flat: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray  # 1 = positive
    ratings: np.ndarray  # star rating from the file name, 0 when unknown

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """Words per review (the start token not counted)."""
        return np.diff(self.offsets) - 1

    def codes(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def head(self, n: int) -> Split:
        n = len(self) if n <= 0 else min(n, len(self))
        end = self.offsets[n]
        return Split(self.flat[:end], self.offsets[: n + 1], self.labels[:n], self.ratings[:n])


@dataclass
class Dataset:
    source: SourceInfo
    words: list[str]  # by training-set frequency rank
    train: Split
    test: Split
    cache_file: Path | None = None
    _texts: dict | None = field(default=None, repr=False)

    def encoder(self, top_words: int, maxlen: int) -> Encoder:
        return Encoder(words=self.words, top_words=top_words, maxlen=maxlen,
                       source=self.source.kind)

    def split(self, name: str) -> Split:
        return self.train if name == "train" else self.test

    def arrays(self, name: str, top_words: int, maxlen: int, n: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Padded ('pre') int32 codes and float32 labels of the first n reviews (0 = all)."""
        s = self.split(name).head(n)
        flat = np.where(s.flat >= top_words, OOV, s.flat).astype(np.int32)
        return pad_flat(flat, s.offsets, maxlen), s.labels.astype(np.float32)

    def ragged(self, name: str, top_words: int, n: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Codes with the vocabulary cut, unpadded: (flat, offsets)."""
        s = self.split(name).head(n)
        return np.where(s.flat >= top_words, OOV, s.flat).astype(np.int32), s.offsets

    def texts(self, name: str) -> list[str]:
        """Raw review texts (loaded lazily: the training path never needs them)."""
        if self._texts is None:
            self._texts = _load_texts(self)
        return self._texts[name]

    def summary(self) -> dict:
        out = {"source": self.source.kind, "label": self.source.label(),
               "path": self.source.path, "reason": self.source.reason,
               "vocabulary": len(self.words)}
        for name in ("train", "test"):
            s = self.split(name)
            lengths = s.lengths()
            out[name] = {"reviews": len(s), "positive": int(s.labels.sum()),
                         "negative": int(len(s) - s.labels.sum()),
                         "mean_words": float(lengths.mean()) if len(s) else 0.0,
                         "median_words": float(np.median(lengths)) if len(s) else 0.0,
                         "p90_words": float(np.percentile(lengths, 90)) if len(s) else 0.0,
                         "max_words": int(lengths.max()) if len(s) else 0}
        return out


# -- choosing a source ---------------------------------------------------------------------

def _candidates() -> list[Path]:
    """The usual places for a copy of Stanford's archive or folder."""
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    roots = [Path.cwd(), Path.cwd() / "data", paths.PROJECT_ROOT, paths.PROJECT_ROOT / "data",
             paths.PROJECT_ROOT.parent / "shared" / "data", keras_home]
    names = ["aclImdb", "aclImdb_v1.tar.gz", "aclImdb_v1_labeled.tar.gz"]
    seen: list[Path] = []
    for root in roots:
        for name in names:
            p = root / name
            if p not in seen:
                seen.append(p)
    return seen


def _keras_cached() -> bool:
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    return (keras_home / "imdb.npz").exists() and (keras_home / "imdb_word_index.json").exists()


def _online(timeout: float = 1.5) -> bool:
    """Can the Keras/Stanford downloads be reached? Never asked when LAB_OFFLINE is set."""
    if os.environ.get("LAB_OFFLINE"):
        return False
    try:
        with socket.create_connection(("storage.googleapis.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_source() -> SourceInfo:
    """Where the data comes from, and why. Order: IMDB_DATA; a local copy; the Keras
    download when online; the demo set."""
    env = os.environ.get("IMDB_DATA", "").strip()
    if env:
        if env in ("demo", "keras"):
            return SourceInfo(env, "", f"IMDB_DATA={env}")
        p = Path(env).expanduser()
        if not p.exists():
            raise DataError(f"IMDB_DATA={env} does not exist: point it at an aclImdb folder or "
                            "aclImdb_v1.tar.gz, or set IMDB_DATA=demo / IMDB_DATA=keras")
        return SourceInfo("aclimdb", str(p.resolve()), "IMDB_DATA is set")
    for p in _candidates():
        if (p.is_dir() and (p / "train").is_dir()) or (p.is_file() and p.name.endswith(".tar.gz")):
            return SourceInfo("aclimdb", str(p.resolve()), f"found a local copy at {p}")
    if _keras_cached():
        return SourceInfo("keras", "", "Keras's imdb download is in the Keras cache")
    if _online():
        return SourceInfo("keras", "", "online: keras.datasets.imdb downloads the tutorial's data")
    return SourceInfo("demo", "", "no IMDB_DATA, no local archive, and offline: using the "
                      "built-in demo set. Set IMDB_DATA=/path/to/aclImdb_v1.tar.gz for real reviews")


# -- reading sources ----------------------------------------------------------------------

def _read_aclimdb(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    """{split: [(label, rating, text)]} sorted by (label, id) for a stable order."""
    rows: dict[str, list[tuple[int, int, int, str]]] = {"train": [], "test": []}
    if path.is_dir():
        root = path if (path / "train").is_dir() else path / "aclImdb"
        for split in ("train", "test"):
            for lab in ("neg", "pos"):
                folder = root / split / lab
                if not folder.is_dir():
                    raise DataError(f"{folder} is missing: not an aclImdb folder")
                for f in folder.glob("*.txt"):
                    rid, rating = f.stem.split("_")
                    rows[split].append((int(lab == "pos"), int(rid), int(rating),
                                        f.read_text(encoding="utf-8", errors="replace")))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    m = _MEMBER.search(member.name)
                    if not m or not member.isfile():
                        continue
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    text = fh.read().decode("utf-8", errors="replace")
                    rows[m.group(1)].append((int(m.group(2) == "pos"), int(m.group(3)),
                                             int(m.group(4)), text))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
    if not rows["train"] or not rows["test"]:
        raise DataError(f"{path} holds no aclImdb/train and aclImdb/test reviews")
    return {k: [(lab, rating, text) for lab, _, rating, text in sorted(v, key=lambda r: r[:2])]
            for k, v in rows.items()}


def _demo_rows(n: int = DEMO_SIZE, seed: int = 0) -> dict[str, list[tuple[int, int, str]]]:
    """Synthetic reviews with real sentiment words, so tiny models learn something."""
    rng = np.random.default_rng(seed)
    pos = ["great", "wonderful", "excellent", "brilliant", "moving", "superb", "funny", "beautiful", "loved", "masterpiece", "charming", "touching", "delightful", "enjoyable", "perfect"]
    neg = ["terrible", "awful", "boring", "dull", "waste", "worst", "poor", "stupid", "hated", "mess", "bland", "predictable", "annoying", "painful", "disappointing"]
    neutral = (["the", "movie", "film", "plot", "actor", "actress", "story", "scene", "director", "script", "cast", "music", "ending", "character", "camera", "and", "a", "of", "it", "was", "is", "this", "that", "with", "but"])
    subjects = ["the acting", "the story", "the ending", "the soundtrack", "this film",
                "the director's work", "the cast"]
    out: dict[str, list[tuple[int, int, str]]] = {}
    for split in ("train", "test"):
        rows = []
        for i in range(n):
            label = i % 2
            n_words = int(rng.integers(8, 120))
            strong, weak = (pos, neg) if label else (neg, pos)
            words = []
            for _ in range(n_words):
                r = rng.random()
                if r < 0.12:
                    words.append(strong[rng.integers(len(strong))])
                elif r < 0.15:
                    words.append(weak[rng.integers(len(weak))])
                else:
                    words.append(neutral[rng.integers(len(neutral))])
            subject = subjects[rng.integers(len(subjects))]
            text = f"{subject.capitalize()} was {strong[rng.integers(len(strong))]}. " + \
                " ".join(words) + "."
            rating = int(rng.integers(7, 11)) if label else int(rng.integers(1, 5))
            rows.append((label, rating, text))
        out[split] = rows
    return out


def _encode_rows(rows: dict[str, list[tuple[int, int, str]]]) -> tuple[list[str], dict]:
    """Tokenize, rank words on the training split, encode everything, shuffle like Keras."""
    tokens = {k: [tokenize(t) for _, _, t in v] for k, v in rows.items()}
    words = rank_words(tokens["train"])
    index = {w: i + 1 + INDEX_FROM for i, w in enumerate(words)}
    arrays = {}
    for split in ("train", "test"):
        seqs = [[START] + [index.get(w, OOV) for w in toks] for toks in tokens[split]]
        order = np.random.default_rng(SHUFFLE_SEED).permutation(len(seqs))
        arrays[split] = _pack([seqs[i] for i in order],
                              [rows[split][i][0] for i in order],
                              [rows[split][i][1] for i in order])
        arrays[split + "_order"] = order
    return words, arrays


def _pack(seqs: list[list[int]], labels, ratings) -> Split:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((c for s in seqs for c in s), dtype=np.int32, count=int(offsets[-1]))
    return Split(flat, offsets, np.asarray(labels, dtype=np.int8),
                 np.asarray(ratings, dtype=np.int8))


def _read_keras() -> tuple[list[str], dict]:
    """The tutorial's exact data (downloads on first use)."""
    import keras  # deferred: the aclimdb/demo paths need no TensorFlow

    (xtr, ytr), (xte, yte) = keras.datasets.imdb.load_data()  # no num_words/maxlen: keep all
    word_index = keras.datasets.imdb.get_word_index()
    words = [w for w, _ in sorted(word_index.items(), key=lambda kv: kv[1])]
    arrays = {"train": _pack([list(s) for s in xtr], ytr, np.zeros(len(ytr))),
              "test": _pack([list(s) for s in xte], yte, np.zeros(len(yte)))}
    return words, arrays


# -- cache ---------------------------------------------------------------------------------

def _cache_key(src: SourceInfo) -> str:
    ident = {"kind": src.kind, "v": ENCODING_VERSION}
    if src.kind == "aclimdb":
        p = Path(src.path)
        st = p.stat()
        ident.update(path=str(p), size=st.st_size, mtime=int(st.st_mtime))
    elif src.kind == "demo":
        ident.update(size=DEMO_SIZE)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(src: SourceInfo) -> str:
    """What identifies the data a source yields (run reuse compares it)."""
    return _cache_key(src)


def _private_tmp(path: Path, suffix: str) -> Path:
    """A temporary name beside ``path`` that no other writer uses: workers that find the
    cache missing at once each write their own file, and each rename is atomic."""
    return path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp{suffix}")


def _save(path: Path, words: list[str], arrays: dict, src: SourceInfo) -> None:
    tmp = _private_tmp(path, ".npz")
    np.savez(tmp, words=np.array(json.dumps(words)), source=np.array(json.dumps(src.__dict__)),
             **{f"{k}_{a}": getattr(arrays[k], a) for k in ("train", "test")
                for a in ("flat", "offsets", "labels", "ratings")})
    os.replace(tmp, path)


def _load_texts(ds: Dataset) -> dict[str, list[str]]:
    """Texts in the cached (shuffled) order; cached in their own file."""
    if ds.cache_file is None:
        raise DataError("texts are only available for cached datasets")
    tpath = ds.cache_file.with_name(ds.cache_file.stem + "-texts.json")
    if tpath.exists():
        return json.loads(tpath.read_text(encoding="utf-8"))
    rows = _source_rows(ds.source)
    if rows is None:  # keras: reconstruct from codes, the way Keras users read reviews
        enc = ds.encoder(len(ds.words) + INDEX_FROM + 1, 10**9)
        texts = {s: [" ".join(enc.word(int(c)) for c in ds.split(s).codes(i)[1:])
                     for i in range(len(ds.split(s)))] for s in ("train", "test")}
    else:
        texts = {}
        for split in ("train", "test"):
            order = np.random.default_rng(SHUFFLE_SEED).permutation(len(rows[split]))
            texts[split] = [rows[split][i][2] for i in order]
    tmp = _private_tmp(tpath, ".json")
    tmp.write_text(json.dumps(texts), encoding="utf-8")
    os.replace(tmp, tpath)
    return texts


def _source_rows(src: SourceInfo):
    if src.kind == "aclimdb":
        return _read_aclimdb(Path(src.path))
    if src.kind == "demo":
        return _demo_rows()
    return None


def cache_path(src: SourceInfo, cache_dir: Path | None = None) -> Path:
    """The encoded-data cache file for ``src``."""
    return (cache_dir or paths.cache_dir()) / f"data-{src.kind}-{_cache_key(src)}.npz"


def split_sizes(src: SourceInfo | None = None) -> tuple[int, int]:
    """Reviews in the training and test splits: from the cache's label arrays alone
    (milliseconds: nothing else of the file is read), else by loading (and caching) the
    dataset."""
    src = src or resolve_source()
    path = cache_path(src)
    if path.exists():
        try:
            with np.load(path) as z:
                return len(z["train_labels"]), len(z["test_labels"])
        except (OSError, KeyError, ValueError):
            pass  # a corrupt cache: load_dataset rebuilds it
    ds = load_dataset(src)
    return len(ds.train), len(ds.test)


def load_dataset(src: SourceInfo | None = None, cache_dir: Path | None = None) -> Dataset:
    """The dataset for ``src`` (default: resolve_source()), from the disk cache when fresh."""
    src = src or resolve_source()
    cache_dir = cache_dir or paths.cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_path(src, cache_dir)
    if cache.exists():
        try:
            with np.load(cache) as z:
                words = json.loads(str(z["words"]))
                splits = {k: Split(z[f"{k}_flat"], z[f"{k}_offsets"], z[f"{k}_labels"],
                                   z[f"{k}_ratings"]) for k in ("train", "test")}
            return Dataset(src, words, splits["train"], splits["test"], cache)
        except (OSError, KeyError, ValueError):
            cache.unlink(missing_ok=True)  # corrupt cache: rebuild below
    if src.kind == "keras":
        try:
            words, arrays = _read_keras()
        except Exception as exc:  # noqa: BLE001 - any download/parse failure is a DataError
            raise DataError(f"keras.datasets.imdb could not be loaded ({exc}); set IMDB_DATA "
                            "to a copy of aclImdb_v1.tar.gz or IMDB_DATA=demo") from exc
    else:
        words, arrays = _encode_rows(_source_rows(src))
    _save(cache, words, arrays, src)
    return Dataset(src, words, arrays["train"], arrays["test"], cache)


def timed_load(src: SourceInfo | None = None, cache_dir: Path | None = None
               ) -> tuple[Dataset, float]:
    t0 = time.perf_counter()
    ds = load_dataset(src, cache_dir)
    return ds, time.perf_counter() - t0
