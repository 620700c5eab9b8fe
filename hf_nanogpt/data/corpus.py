"""Pretraining corpora.

`stdlib` is the built-in corpus every machine already has: the Python standard library's own `.py`
files, found through `sysconfig` (third-party `site-packages` excluded), in sorted path order, split
into train/val by a hash of the relative path (about 1 in 20 files is validation), so the split never
changes when files are added or removed elsewhere.
"""

import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

STDLIB_VAL_EVERY = 20  # a file goes to validation when hash(relative path) % 20 == 0


def stdlib_files(split: str = "train") -> list[Path]:
    """The stdlib `.py` files of `split` ("train", "val" or "all"), sorted by relative path."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"stdlib corpus: split={split!r} is invalid: expected 'train', 'val' or 'all'")
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if "-packages/" in rel:  # site-packages / dist-packages are not the standard library
            continue
        is_val = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % STDLIB_VAL_EVERY == 0
        if split == "all" or (split == "val") == is_val:
            files.append(path)
    return files


def iter_stdlib_texts(split: str = "train") -> Iterator[str]:
    """Yield the text of each stdlib file of `split`; undecodable bytes become U+FFFD."""
    for path in stdlib_files(split):
        yield path.read_text(encoding="utf-8", errors="replace")
