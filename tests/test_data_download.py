"""scripts/download_data.py: first N parquet shards, on a local folder standing in for the hub repo."""

import runpy

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_nanogpt.data import download
from hf_nanogpt.data.corpus import iter_texts
from hf_nanogpt.data.download import download_shards


@pytest.fixture()
def repo(tmp_path):
    """A dataset repository layout: nested shards, and files that are not shards."""
    root = tmp_path / "repo"
    for rel in ("data/a/shard_000.parquet", "data/a/shard_001.parquet", "data/b/shard_002.parquet"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": [f"{rel} row {i}" for i in range(5)]}), root / rel)
    (root / "README.md").write_text("# card\n")
    return root


def test_first_n_shards_keep_their_paths(repo, tmp_path):
    out = tmp_path / "out"
    paths = download_shards(str(repo), 2, out)
    assert [p.relative_to(out).as_posix() for p in paths] == ["data/a/shard_000.parquet", "data/a/shard_001.parquet"]
    for p in paths:
        assert p.read_bytes() == (repo / p.relative_to(out)).read_bytes()
    assert not list(out.rglob("*.tmp")) and not (out / "README.md").exists()
    # the folder is a corpus spec; nanochat's split holds out the last shard
    assert list(iter_texts(str(out), "val")) == [f"data/a/shard_001.parquet row {i}" for i in range(5)]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert [p.stat().st_mtime_ns for p in download_shards(str(repo), 2, out)] == mtimes  # present: skipped
    assert len(download_shards(str(repo), -1, out)) == 3
    assert [p.name for p in download_shards(str(repo), 1, tmp_path / "b", subdir="data/b")] == ["shard_002.parquet"]


def test_errors(repo, tmp_path):
    with pytest.raises(ValueError, match="has 3 parquet shards, fewer than the 10 asked for"):
        download_shards(str(repo), 10, tmp_path / "out")
    with pytest.raises(ValueError, match="must be >= 1 or -1"):
        download_shards(str(repo), 0, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nothing does not exist"):
        download_shards(str(repo), 1, tmp_path / "out", subdir="nothing")


class FlakyFS:
    """The local filesystem, but `get_file` writes half the file and fails the first `failures` times."""

    def __init__(self, failures):
        self.fs, self.failures = fsspec.filesystem("file"), failures

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def get_file(self, rpath, lpath):
        if self.failures:
            self.failures -= 1
            with open(rpath, "rb") as src, open(lpath, "wb") as dst:
                dst.write(src.read()[:100])
            raise ConnectionError("connection reset")
        self.fs.get_file(rpath, lpath)


def test_retries_and_no_partial_shards(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda s: None)  # the backoff waits, not the logic
    root = str(repo.resolve())
    [path] = download_shards("owner/name", 1, tmp_path / "ok", fs=FlakyFS(failures=2), root=root, retries=2)
    assert path.read_bytes() == (repo / "data/a/shard_000.parquet").read_bytes()
    with pytest.raises(RuntimeError, match="shard_000.parquet failed after 2 attempts: connection reset"):
        download_shards("owner/name", 1, tmp_path / "bad", fs=FlakyFS(failures=5), root=root, retries=1)
    assert not [p for p in (tmp_path / "bad").rglob("*") if p.is_file()]  # no truncated or temporary shard left


def test_script(repo, tmp_path, repo_root, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "download_data.py"))["main"]
    main(["-n", "1", "--repo", str(repo), "--output_dir", str(tmp_path / "o")])
    assert "1 shard(s)" in capsys.readouterr().out and (tmp_path / "o/data/a/shard_000.parquet").is_file()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--output_dir" in capsys.readouterr().out
