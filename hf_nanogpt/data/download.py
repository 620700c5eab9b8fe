"""Fetch the first N parquet shards of a Hugging Face Hub dataset repository (nanochat's data step).

The repository is read through an fsspec filesystem: `huggingface_hub.HfFileSystem` for a hub id
(`datasets/OWNER/NAME[@REVISION]`), or the local filesystem when `repo` is an existing directory (a
mirror, and how the tests stand in for the hub). Shards are the repository's `*.parquet` files in
sorted path order, optionally only those under `subdir`; they keep their relative paths under
`output_dir`, so the corpus spec is `OUTPUT_DIR` (every shard) or `OUTPUT_DIR/**/*.parquet[:-1]`.

Each shard is written to a temporary name and renamed when complete, so an interrupted download never
leaves a truncated shard behind; a shard already present with the right size is skipped, and failed
transfers are retried with exponential backoff.
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)


def _filesystem(repo: str, revision: str | None):
    """(filesystem, root path inside it) for a hub id or a local directory."""
    if Path(repo).expanduser().is_dir():
        import fsspec

        return fsspec.filesystem("file"), str(Path(repo).expanduser().resolve())
    from huggingface_hub import HfFileSystem

    return HfFileSystem(), f"datasets/{repo}" + (f"@{revision}" if revision else "")


def list_shards(fs, root: str, subdir: str | None = None) -> list[str]:
    """Sorted paths (inside `fs`) of the parquet files under `root` (or `root/subdir`)."""
    base = f"{root}/{subdir.strip('/')}" if subdir else root
    if not fs.exists(base):
        raise FileNotFoundError(f"{base} does not exist")
    return sorted(p for p in fs.find(base) if p.endswith(".parquet"))


def _fetch(fs, remote: str, local: Path, retries: int) -> Path:
    size = fs.size(remote)
    if local.exists() and local.stat().st_size == size:
        logger.info("%s: present, skipped", local)
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(local.name + ".tmp")
    for attempt in range(retries + 1):
        try:
            fs.get_file(remote, str(tmp))
            if tmp.stat().st_size != size:
                raise OSError(f"{remote}: got {tmp.stat().st_size} bytes, expected {size}")
            os.replace(tmp, local)
            logger.info("%s: downloaded (%d bytes)", local, size)
            return local
        except Exception as err:  # network errors come in many types; retry all, then re-raise
            tmp.unlink(missing_ok=True)
            if attempt == retries:
                raise RuntimeError(f"downloading {remote} failed after {retries + 1} attempts: {err}") from err
            wait = 2 ** attempt
            logger.warning("%s: %s; retrying in %ds", remote, err, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def download_shards(repo: str, num_shards: int, output_dir: str | os.PathLike, *, subdir: str | None = None,
                    revision: str | None = None, workers: int = 4, retries: int = 3, fs=None,
                    root: str | None = None) -> list[Path]:
    """Download the first `num_shards` parquet shards of `repo` (-1: all) into `output_dir`; returns the
    local paths in shard order. `fs`/`root` override the transport (default: see `_filesystem`)."""
    if num_shards == 0 or num_shards < -1:
        raise ValueError(f"number of shards must be >= 1 or -1 (all), got {num_shards}")
    if fs is None:
        fs, root = _filesystem(repo, revision)
    shards = list_shards(fs, root, subdir)
    if not shards:
        raise FileNotFoundError(f"{repo}: no parquet files" + (f" under {subdir}" if subdir else ""))
    if num_shards > len(shards):
        raise ValueError(f"{repo} has {len(shards)} parquet shards, fewer than the {num_shards} asked for")
    chosen = shards if num_shards == -1 else shards[:num_shards]
    output_dir = Path(output_dir)
    targets = [output_dir / Path(p).relative_to(Path(root)) if p.startswith(root) else output_dir / Path(p).name
               for p in chosen]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pair: _fetch(fs, pair[0], pair[1], retries), zip(chosen, targets)))
