"""Pretraining corpora: one string names a corpus in a recipe.

Spec syntax (`train_data` / `val_data` in a recipe)::

    spec   := source ["[" slice "]"]
    source := "stdlib"                      the built-in corpus (below)
            | PATH | GLOB | DIR             local *.txt, *.jsonl ("text" field), *.parquet ("text" column);
                                            a directory means every such file under it; `~` is expanded
            | "hf:" REPO [":" CONFIG] ["@" SPLIT]
                                            a Hugging Face Hub dataset, streamed ("text" column)
            | OWNER/NAME                    shorthand for hf:OWNER/NAME when no such local path exists
                                            (and NAME has no .txt/.jsonl/.parquet suffix)
    slice  := [START] ":" [END]             Python slice bounds, both integers or both percentages:
            integers pick files from the sorted list of matched files (nanochat: `shards/*.parquet[:-1]`
            trains on every shard but the last, `shards/*.parquet[-1:]` validates on it);
            percentages cut the content: characters of text files, rows of jsonl/parquet
            (nanoGPT's shakespeare_char: `input.txt[:90%]` / `input.txt[90%:]`).

Examples: `stdlib`, `../shared/data/corpus/tinyshakespeare.txt[90%:]`, `~/fineweb/*.parquet[:-1]`,
`hf:HuggingFaceFW/fineweb-edu:sample-10BT@train`.

Train/val split. A spec with a slice is used as written for either split (the recipe names the
validation corpus separately). Without a slice the split is deterministic: `stdlib` splits by a hash
of the relative path (about 1 file in 20 is validation, so the split never changes when files appear
elsewhere); several local files -> the last file (sorted) is validation, the rest train (nanochat);
one local file -> the last 10% of its content is validation (nanoGPT); a hub dataset -> its `train`
split, and `validation` for val, unless `@SPLIT` names one.

Documents. A jsonl line or parquet row is one document. A stdlib `.py` file or a `.txt` file is not a
natural document (a 700 kB source file would be cropped to its first row by BOS-aligned packing), so
it is cut at blank lines into documents of at most `DOC_CHARS` characters (a longer paragraph is cut
at line ends, a longer line hard). Empty documents are dropped.

Bad data. A missing path or an empty corpus raises with the spec and what was looked for; a jsonl line
that is not JSON, not an object, or lacks a string `text` raises `ValueError` naming file and line; a
parquet file without a `text` column raises naming the file and its columns. Bytes that are not UTF-8
are replaced by U+FFFD (rule: never fail on encoding, always say so) and a warning names the file, the
number of bad bytes and the first offset (jsonl: the line).
"""

import glob
import hashlib
import json
import logging
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

STDLIB_VAL_EVERY = 20  # a file goes to validation when hash(relative path) % 20 == 0
DOC_CHARS = 1000  # longest document cut from a .py / .txt file (~300 tokens at a 4k vocabulary)
DEFAULT_VAL_FRACTION = 0.1  # one local file without a slice: last 10% is validation
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
CORPUS_VERSION = "corpus-v1"  # bump when the document rules change: it is part of every cache key

_SLICE = re.compile(r"^(?P<source>.+)\[(?P<start>[^\[\]:]*):(?P<end>[^\[\]:]*)\]$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ----------------------------------------------------------------------------- stdlib
def stdlib_files(split: str = "train") -> list[Path]:
    """The stdlib `.py` files of `split` ("train", "val" or "all"), sorted by relative path."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"stdlib corpus: split={split!r} is invalid: expected 'train', 'val' or 'all'")
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    # os.walk with pruning: site-packages (torch, transformers, ...) lives under the stdlib folder and
    # would dominate the walk time; a path containing "-packages/" is never standard library.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.endswith("-packages") and d != "__pycache__"]
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        for name in filenames:
            if name.endswith(".py"):
                rels.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    files = []
    for rel in sorted(rels, key=lambda r: Path(r).parts):  # same order as sorted(Path objects)
        is_val = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % STDLIB_VAL_EVERY == 0
        if split == "all" or (split == "val") == is_val:
            files.append(root / rel)
    return files


def iter_stdlib_texts(split: str = "train") -> Iterator[str]:
    """Yield the text of each stdlib file of `split`; undecodable bytes become U+FFFD."""
    for path in stdlib_files(split):
        yield path.read_text(encoding="utf-8", errors="replace")


# ----------------------------------------------------------------------------- spec parsing
@dataclass
class CorpusSpec:
    """A parsed corpus spec; `kind` is "stdlib", "local" or "hub"."""

    text: str
    kind: str
    files: list[Path] = field(default_factory=list)  # local: after the file slice / default split
    repo: str = ""  # hub
    config: str | None = None
    hub_split: str | None = None
    content_slice: tuple[float | None, float | None] | None = None  # fractions of the content
    split: str = "train"

    @property
    def streaming(self) -> bool:
        return self.kind == "hub"


def _parse_bound(text: str, spec: str) -> tuple[str, float | int | None]:
    text = text.strip()
    if not text:
        return "none", None
    try:
        if text.endswith("%"):
            value = float(text[:-1]) / 100
            if not 0 <= value <= 1:
                raise ValueError
            return "pct", value
        return "int", int(text)
    except ValueError:
        raise ValueError(f"corpus spec {spec!r}: slice bound {text!r} is invalid: expected an integer "
                         "(files) or a percentage between 0% and 100% (content)") from None


def _local_files(source: str, spec: str) -> list[Path]:
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in LOCAL_SUFFIXES]
        if not files:
            raise FileNotFoundError(f"corpus spec {spec!r}: directory {path} holds no {'/'.join(LOCAL_SUFFIXES)} files")
        return files
    if glob.has_magic(str(path)):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise FileNotFoundError(f"corpus spec {spec!r}: no file matches the pattern {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"corpus spec {spec!r}: {path} does not exist (expected 'stdlib', a local "
                                ".txt/.jsonl/.parquet file, glob or directory, or 'hf:OWNER/NAME' for a hub dataset)")
    bad = [p for p in files if p.suffix not in LOCAL_SUFFIXES]
    if bad:
        raise ValueError(f"corpus spec {spec!r}: {bad[0]} has an unsupported extension {bad[0].suffix!r}: "
                         f"expected one of {', '.join(LOCAL_SUFFIXES)}")
    return files


def parse_spec(spec: str, split: str = "train") -> CorpusSpec:
    """Resolve `spec` for `split` ("train" or "val"): which files, which part of their content."""
    if split not in ("train", "val"):
        raise ValueError(f"corpus split {split!r} is invalid: expected 'train' or 'val'")
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"corpus spec {spec!r} is empty: expected 'stdlib', a path or 'hf:OWNER/NAME'")
    spec = spec.strip()
    source, bounds = spec, None
    match = _SLICE.match(spec)
    if match:
        source = match["source"]
        bounds = (_parse_bound(match["start"], spec), _parse_bound(match["end"], spec))
    if source == "stdlib":
        if bounds is not None:
            raise ValueError(f"corpus spec {spec!r}: the stdlib corpus takes no slice (its split is built in)")
        return CorpusSpec(text=spec, kind="stdlib", files=stdlib_files(split), split=split)
    hub = source[3:] if source.startswith("hf:") else None
    if (hub is None and _HUB_ID.match(source) and not source.endswith(LOCAL_SUFFIXES)
            and not Path(os.path.expanduser(source)).exists()):
        hub = source  # OWNER/NAME that is not a local path (a missing "dir/file.txt" stays a local error)
    if hub is not None:
        if bounds is not None:
            raise ValueError(f"corpus spec {spec!r}: hub datasets take no slice; name a split with @SPLIT")
        hub, _, hub_split = hub.partition("@")
        repo, _, config = hub.partition(":") if not hub.startswith(("/", ".", "~")) else (hub, "", "")
        if not repo:
            raise ValueError(f"corpus spec {spec!r}: missing the dataset id after 'hf:'")
        hub_split = hub_split or ("train" if split == "train" else "validation")
        return CorpusSpec(text=spec, kind="hub", repo=os.path.expanduser(repo), config=config or None,
                          hub_split=hub_split, split=split)
    files = _local_files(source, spec)
    content = None
    if bounds is not None:
        kinds = {k for k, _ in bounds if k != "none"}
        if kinds == {"int", "pct"}:
            raise ValueError(f"corpus spec {spec!r}: mix of integer and percentage bounds; use integers "
                             "(files) or percentages (content)")
        if kinds == {"int"}:
            picked = files[slice(bounds[0][1], bounds[1][1])]
            if not picked:
                raise ValueError(f"corpus spec {spec!r}: the slice selects none of the {len(files)} matched files")
            files = picked
        else:
            content = (bounds[0][1], bounds[1][1])
    elif len(files) > 1:  # nanochat: the last shard is validation
        files = files[:-1] if split == "train" else files[-1:]
    else:  # nanoGPT: the last 10% is validation
        cut = 1 - DEFAULT_VAL_FRACTION
        content = (None, cut) if split == "train" else (cut, None)
    return CorpusSpec(text=spec, kind="local", files=files, content_slice=content, split=split)


# ----------------------------------------------------------------------------- reading
def _decode(data: bytes, where: str) -> str:
    """UTF-8 decode; bad bytes become U+FFFD with one warning naming `where` (the documented rule)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        text = data.decode("utf-8", errors="replace")
        bad = text.count("\ufffd") - data.count("\ufffd".encode())
        logger.warning("%s: %d byte(s) are not valid UTF-8 (first at byte %d); replaced by U+FFFD",
                       where, bad, err.start)
        return text


def _cut_long(para: str, max_chars: int) -> list[str]:
    """A paragraph longer than `max_chars`: its lines, a longer line in hard pieces."""
    out = []
    for line in para.splitlines(keepends=True):
        out.extend(line[i:i + max_chars] for i in range(0, len(line), max_chars))
    return out


def split_documents(text: str, max_chars: int = DOC_CHARS) -> list[str]:
    """Cut `text` into documents of at most `max_chars` characters, preferring blank lines, then line
    ends; consecutive paragraphs are merged greedily so documents are as long as allowed."""
    pieces, para = [], ""
    for line in text.splitlines(keepends=True):
        para += line
        if not line.strip():  # a blank line closes a paragraph (and stays with it)
            pieces.append(para)
            para = ""
    if para:
        pieces.append(para)
    pieces = [
        chunk
        for piece in pieces
        for chunk in ([piece] if len(piece) <= max_chars else _cut_long(piece, max_chars))
    ]
    docs, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            docs.append(current)
            current = ""
        current += piece
    if current:
        docs.append(current)
    return docs  # "".join(docs) == text; callers drop whitespace-only documents


def _cut(n: int, frac: tuple[float | None, float | None] | None) -> tuple[int, int]:
    if frac is None:
        return 0, n
    lo, hi = frac
    return (int(n * lo) if lo is not None else 0), (int(n * hi) if hi is not None else n)


def _jsonl_lines(path: Path) -> list[tuple[int, bytes]]:
    with open(path, "rb") as f:
        return [(i, line) for i, line in enumerate(f, 1) if line.strip()]


def _jsonl_text(path: Path, lineno: int, raw: bytes) -> str:
    where = f"{path}, line {lineno}"
    try:
        row = json.loads(_decode(raw, where))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'text' field, got {type(row).__name__}")
    if "text" not in row:
        raise ValueError(f"{where}: the object has no 'text' field (keys: {', '.join(sorted(row)) or 'none'})")
    if not isinstance(row["text"], str):
        raise ValueError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
    return row["text"]


def _parquet_texts(files: list[Path], frac) -> Iterator[str]:
    import pyarrow.parquet as pq

    counts = []
    for path in files:
        meta = pq.ParquetFile(path)
        if "text" not in meta.schema_arrow.names:
            columns = ", ".join(meta.schema_arrow.names)
            raise ValueError(f"{path}: parquet file has no 'text' column (columns: {columns})")
        counts.append(meta.metadata.num_rows)
    lo, hi = _cut(sum(counts), frac)
    start = 0
    for path, count in zip(files, counts):
        a, b = max(lo - start, 0), min(hi - start, count)
        start += count
        if a >= b:
            continue
        seen = 0
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=4096):
            for text in batch.column(0).to_pylist():
                if a <= seen < b and text:
                    yield text
                seen += 1
            if seen >= b:
                break


def iter_local_documents(files: list[Path], content_slice=None) -> Iterator[str]:
    """Documents of local files (the rules of the module docstring), in file order."""
    suffixes = {p.suffix for p in files}
    if len(suffixes) > 1:
        raise ValueError(f"local corpus mixes file types {sorted(suffixes)}: use one of "
                         f"{', '.join(LOCAL_SUFFIXES)} per spec")
    suffix = suffixes.pop()
    if suffix == ".parquet":
        yield from _parquet_texts(files, content_slice)
    elif suffix == ".jsonl":
        lines = [(path, i, raw) for path in files for i, raw in _jsonl_lines(path)]
        lo, hi = _cut(len(lines), content_slice)
        for path, i, raw in lines[lo:hi]:
            text = _jsonl_text(path, i, raw)
            if text:
                yield text
    else:  # .txt: the content slice counts characters of all files together
        texts = [_decode(p.read_bytes(), str(p)) for p in files]
        lo, hi = _cut(sum(len(t) for t in texts), content_slice)
        start = 0
        for text in texts:
            part = text[max(lo - start, 0):max(hi - start, 0)]
            start += len(text)
            yield from (doc for doc in split_documents(part) if doc.strip())


def _generate(kind: str, files: tuple[str, ...], content_slice, spec: str) -> Iterator[dict]:
    """`datasets.Dataset.from_generator` body (module level so it pickles and hashes stably)."""
    paths, count = [Path(f) for f in files], 0
    if kind == "stdlib":
        docs = (d for p in paths for d in split_documents(_decode(p.read_bytes(), str(p))) if d.strip())
    else:
        docs = iter_local_documents(paths, content_slice)
    for doc in docs:
        count += 1
        yield {"text": doc}
    if count == 0:
        shown = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
        raise ValueError(f"corpus spec {spec!r} is empty: no non-empty document in {shown}")


def _fingerprint(parsed: CorpusSpec) -> str:
    """Cache key of the text dataset: the files' paths, sizes and mtimes, the content slice, the rules."""
    h = hashlib.sha256(f"{CORPUS_VERSION}|{DOC_CHARS}|{parsed.kind}|{parsed.content_slice}".encode())
    for path in parsed.files:
        st = path.stat()
        h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _open_hub(parsed: CorpusSpec):
    """The streamed hub dataset of a parsed spec; failures name the spec, repository, config and split."""
    import datasets

    try:
        return datasets.load_dataset(parsed.repo, name=parsed.config, split=parsed.hub_split, streaming=True)
    except Exception as err:  # offline, unknown repo/config/split: many exception types, one clear message
        raise ValueError(f"corpus spec {parsed.text!r}: cannot stream hub dataset {parsed.repo!r} (config "
                         f"{parsed.config!r}, split {parsed.hub_split!r}; name another with @SPLIT): {err}") from err


def load_corpus(spec: str, split: str = "train", cache_dir: str | os.PathLike | None = None):
    """The documents of `spec` for `split` as a dataset with one `text` column.

    Local and stdlib corpora give a `datasets.Dataset` (built once, then cached under `cache_dir` or the
    `datasets` cache, keyed by the files' paths, sizes and mtimes); hub corpora give a streaming
    `datasets.IterableDataset`. Raises on an empty corpus (see the module docstring for other errors).
    """
    import datasets

    parsed = parse_spec(spec, split)
    if parsed.kind == "hub":
        return _open_hub(parsed)
    if not parsed.files:
        raise ValueError(f"corpus spec {spec!r} ({split}): no files")
    try:
        ds = datasets.Dataset.from_generator(
            _generate,
            features=datasets.Features({"text": datasets.Value("string")}),
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            # a tuple, not a list: `datasets` would shard a list argument over separate generator calls
            gen_kwargs={"kind": parsed.kind, "files": tuple(str(p) for p in parsed.files),
                        "content_slice": parsed.content_slice, "spec": f"{spec} ({split})"},
            fingerprint=_fingerprint(parsed),
        )
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, (ValueError, OSError)):  # our bad-data error, with file and line
            raise err.__cause__ from None
        raise
    return ds


def iter_texts(spec: str, split: str = "train") -> Iterator[str]:
    """Documents of any corpus spec as strings, in corpus order, without building a cache (tokenizer
    training reads corpora through this)."""
    parsed = parse_spec(spec, split)
    if parsed.kind == "hub":
        for row in _open_hub(parsed):
            if "text" not in row:
                raise ValueError(f"hub dataset {parsed.repo}: rows have no 'text' field (keys: {', '.join(row)})")
            if row["text"]:
                yield row["text"]
    elif parsed.kind == "stdlib":
        for row in _generate("stdlib", [str(p) for p in parsed.files], None, spec):
            yield row["text"]
    else:
        yield from iter_local_documents(parsed.files, parsed.content_slice)
