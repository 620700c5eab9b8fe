"""Code corpora: Python source files -> one jsonl document per file, for the corpus loader.

    python scripts/prepare_code.py ~/src/myproject out/code.jsonl --strip_comments
    python scripts/pretrain.py recipes/tiny.yaml --train_data=out/code.jsonl

What is kept. Every `*.py` file under the source folder (sorted, `__pycache__` and hidden folders
skipped) is read with its PEP 263 encoding (`tokenize.open`) and parsed with `ast`; a file that does
not decode or does not parse (the standard library ships some on purpose, e.g. `lib2to3` test data)
is left out, counted and named with the reason. It is never fatal: a corpus of thousands of files
should not die on one.

Stripping (`strip_comments=True`). Comments go (the `tokenize` module finds them, so a `#` inside a
string is safe), and so do docstrings (the first string statement of a module, class or function, as
`ast.get_docstring` defines it; `ast` gives their exact spans). A docstring that was the only
statement of its body becomes `pass`, so the result still parses, and lines left empty by the
stripping are dropped. The stripped source is parsed again; if that ever failed the file would be
counted as bad rather than written broken.

Output. One JSON object per line, `{"text": source, "path": relative path}`: the corpus loader
(`hf_nanogpt.data.corpus`) reads the `text` field of each line as one document.
"""

import ast
import io
import json
import os
import tokenize
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CodeCorpusStats:
    """What `prepare_code` did: files written, files left out (with the reason), characters written."""

    kept: int = 0
    empty: int = 0  # parsed, but nothing left (e.g. an __init__.py holding only a docstring)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    chars: int = 0
    chars_before: int = 0  # characters of the kept files before stripping


def _docstring_nodes(tree: ast.AST) -> list[tuple[ast.Expr, bool]]:
    """(docstring statement, is the only statement of its body) for the module, classes and functions."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.append((first, len(node.body) == 1))
    return out


def strip_comments_and_docstrings(source: str) -> str:
    """`source` without comments and docstrings; raises `SyntaxError` if it does not parse.

    Positions come from the original text: comment starts from `tokenize` (character columns), docstring
    spans from `ast` (UTF-8 byte columns, converted per line), so the edits never shift each other.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    comment_at: dict[int, int] = {}  # 0-based line -> character column where its comment starts
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comment_at[tok.start[0] - 1] = tok.start[1]

    def char_col(line: int, byte_col: int) -> int:
        return len(lines[line].encode("utf-8")[:byte_col].decode("utf-8"))

    drop: set[int] = set()  # whole lines removed
    spans: dict[int, tuple[int, int, int, bool]] = {}  # first line -> (start col, last line, end col, alone)
    for node, alone in _docstring_nodes(tree):
        l0, l1 = node.lineno - 1, node.end_lineno - 1
        c0, c1 = char_col(l0, node.col_offset), char_col(l1, node.end_col_offset)
        rest = lines[l1][c1:comment_at.get(l1)]  # after the closing quotes, up to a comment
        whole_lines = not lines[l0][:c0].strip() and not rest.strip()
        if whole_lines and not alone:
            drop.update(range(l0, l1 + 1))
        else:  # inline (`def f(): "doc"`) or the body's only statement: keep a statement there
            spans[l0] = (c0, l1, c1, alone)

    out = []
    i = 0
    while i < len(lines):
        if i in drop:
            i += 1
            continue
        line = lines[i]
        newline = line[len(line.rstrip("\r\n")):]
        had_comment = i in comment_at
        if i in spans:
            c0, l1, c1, alone = spans[i]
            tail = lines[l1]
            tail_newline = tail[len(tail.rstrip("\r\n")):]
            tail_body = tail.rstrip("\r\n")
            if l1 in comment_at:  # a comment after the docstring's closing quotes
                tail_body = tail_body[:comment_at[l1]]
                had_comment = True
            after = tail_body[c1:].strip()
            if not alone and after.startswith(";"):  # `"doc"; x = 1` -> `x = 1`
                line = line[:c0] + after[1:].lstrip() + tail_newline
            else:  # the docstring was the whole body: `pass` keeps it a valid block
                line = line[:c0] + "pass" + tail_body[c1:].rstrip() + tail_newline
            i = l1
        elif had_comment:
            line = line[:comment_at[i]].rstrip() + newline
        if not (had_comment and not line.strip()):  # a line that only held a comment goes entirely
            out.append(line)
        i += 1
    stripped = "".join(out)
    ast.parse(stripped)  # the caller counts a failure as a bad file instead of writing it
    return stripped


def read_python(path: Path) -> str:
    """A source file's text in its declared encoding (PEP 263; UTF-8 by default)."""
    with tokenize.open(path) as f:
        return f.read()


def iter_python_files(src_dir: Path) -> list[Path]:
    """Every `*.py` file under `src_dir`, sorted, skipping `__pycache__` and hidden folders."""
    files = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        files += [Path(dirpath) / name for name in filenames if name.endswith(".py")]
    return sorted(files)


def prepare_code(src_dir, out_path, strip_comments: bool = False) -> CodeCorpusStats:
    """Write the parseable Python files under `src_dir` to `out_path` (jsonl), one document per file.

    The file is written to a temporary name and renamed into place, so an interrupted run never leaves
    half a corpus behind. Raises `FileNotFoundError` / `ValueError` only for a missing source folder or
    one without any `.py` file; bad files are recorded in the returned stats.
    """
    src_dir, out_path = Path(src_dir), Path(out_path)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"prepare_code: source folder {src_dir} does not exist")
    files = iter_python_files(src_dir)
    if not files:
        raise ValueError(f"prepare_code: no .py files under {src_dir}")
    stats = CodeCorpusStats()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for path in files:
                rel = path.relative_to(src_dir).as_posix()
                try:
                    source = read_python(path)
                    ast.parse(source, filename=rel)
                    text = strip_comments_and_docstrings(source) if strip_comments else source
                except (SyntaxError, UnicodeDecodeError, ValueError) as err:  # ValueError: null bytes
                    stats.bad.append((rel, f"{type(err).__name__}: {err}"))
                    continue
                except OSError as err:
                    stats.bad.append((rel, f"unreadable: {err}"))
                    continue
                if not text.strip():
                    stats.empty += 1
                    continue
                out.write(json.dumps({"text": text, "path": rel}, ensure_ascii=False) + "\n")
                stats.kept += 1
                stats.chars += len(text)
                stats.chars_before += len(source)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return stats


__all__ = ["CodeCorpusStats", "iter_python_files", "prepare_code", "read_python", "strip_comments_and_docstrings"]
