"""Run reuse: what makes two submissions the same training.

Two runs train identically when their configurations match in every field but the display
name (the seed included), they read the same data (``core.data.fingerprint``: source kind,
path, size and modification time, encoding version) and the same engine runs them (this
package's version and the installed TensorFlow and Keras, read from package metadata so
the web server never imports them). ``reuse_key`` hashes the three; with reuse on
(``classroom.ClassSettings.reuse``) ``jobs.submit`` answers a match with a copy of the
completed run instead of training again.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata

import core
from core.config import TrainConfig
from core.data import DataError, fingerprint, resolve_source

ADDED_FIELDS = {"bigrams": 0}  # TrainConfig fields newer than the first reuse keys


@lru_cache(maxsize=1)
def engine_version() -> str:
    versions = [f"core {core.__version__}"]
    for dist in ("tensorflow", "tensorflow-cpu", "keras"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(versions)


def data_fingerprint() -> str:
    try:
        return fingerprint(resolve_source())
    except DataError:
        return "no-data"


def reuse_key(cfg: TrainConfig) -> str:
    training = {k: v for k, v in cfg.to_dict().items() if k != "name"}
    # Fields added later hash as before at their default, so earlier runs stay reusable.
    for name, default in ADDED_FIELDS.items():
        if training.get(name) == default:
            training.pop(name)
    ident = {"config": training, "data": data_fingerprint(), "engine": engine_version()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
