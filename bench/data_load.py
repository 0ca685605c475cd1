"""Data load: first load of the 50,000 reviews vs the cached load.

core.data.load_dataset with a fresh, empty cache directory reads and encodes the archive
and writes the cache; the same call again reads the cache. Both in one process.

    IMDB_DATA=/work/shared/data/aclImdb_v1_labeled.tar.gz .venv/bin/python bench/data_load.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import common
import numpy as np


def main() -> None:
    args = common.flags(__doc__, cached_repeats=5)
    source = args.source
    from core.data import load_dataset

    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    try:
        first, ds = common.timed(lambda: load_dataset(cache_dir=cache))
        n = len(ds.train) + len(ds.test)
        cached = [common.timed(lambda: load_dataset(cache_dir=cache))[0]
                  for _ in range(args.cached_repeats)]
        size = sum(f.stat().st_size for f in cache.iterdir()) / 1e6
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    med = float(np.median(cached))
    rows = [["first load (read + encode archive, write cache)", f"{first:.2f}", "1x"],
            [f"cached load (median of {len(cached)})", f"{med:.3f}", f"{first / med:.0f}x"]]
    body = (f"{n:,} reviews from `{Path(source).name or source}`, fresh cache dir "
            f"(cache file {size:.0f} MB); cached loads: "
            f"{', '.join(f'{c:.3f}' for c in cached)} s. Target: cached at most 2 s.\n\n"
            + common.table(["load", "seconds", "speed-up"], rows))
    common.write_section("data_load", "5. Data load: first vs cached", body)


if __name__ == "__main__":
    main()
