"""Code corpora (hf_nanogpt.data.code, scripts/prepare_code.py) on the standard library's own source."""

import ast
import io
import json
import runpy
import sysconfig
import tokenize
from pathlib import Path

import pytest

from hf_nanogpt.data.code import prepare_code, strip_comments_and_docstrings
from hf_nanogpt.data.corpus import iter_texts

STDLIB = Path(sysconfig.get_paths()["stdlib"])


class _DropDocstrings(ast.NodeTransformer):
    """The reference: an AST with each docstring statement removed (`pass` where the body empties)."""

    def generic_visit(self, node):
        super().generic_visit(node)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
        return node


def _comments(source: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]


def _same_code_without_docstrings(original: str, stripped: str) -> bool:
    return ast.dump(_DropDocstrings().visit(ast.parse(original))) == ast.dump(ast.parse(stripped))


TRICKY = '''\
#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Module docstring."""
import re  # trailing comment
PATTERN = "# not a comment"  # but this is


def only_doc():
    """Only a docstring: the body must stay valid."""


def inline(): "inline docstring"; return 1


class Café:  # a non-ASCII name before the docstring shifts byte columns
    """Class docstring
    over two lines."""

    # a comment line on its own
    x = """a string, not a doc string # keeps its hash"""

    def method(self):
        \'\'\'Docstring.\'\'\'  # comment after the quotes
        return {"a": 1,  # inside brackets
                "b": 2}
'''


def test_strip_handles_the_tricky_cases():
    out = strip_comments_and_docstrings(TRICKY)
    assert _comments(out) == [] and "docstring" not in out.lower()
    assert _same_code_without_docstrings(TRICKY, out)
    assert '"# not a comment"' in out and "keeps its hash" in out  # '#' inside strings survives
    assert "def only_doc():\n    pass\n" in out and "def inline(): return 1\n" in out
    namespace = {}
    exec(compile(out, "<stripped>", "exec"), namespace)  # the result runs, and means the same
    assert namespace["inline"]() == 1 and namespace["Café"]().method() == {"a": 1, "b": 2}
    assert strip_comments_and_docstrings("x = 1\r\n# gone\r\ny = 2  # gone\r\n") == "x = 1\r\ny = 2\r\n"
    with pytest.raises(SyntaxError):
        strip_comments_and_docstrings("print 'python 2'\n")


@pytest.mark.parametrize("package", ["json", "email/mime"])
def test_stripping_stdlib_packages_keeps_the_code(package):
    for path in sorted((STDLIB / package).glob("*.py")):
        source = path.read_text(encoding="utf-8")
        out = strip_comments_and_docstrings(source)
        assert _comments(out) == [], path
        assert _same_code_without_docstrings(source, out), path


def test_prepare_code_on_stdlib_counts_and_names_bad_files(tmp_path):
    """lib2to3's test data holds Python 2 files on purpose: they are skipped and named, the rest kept."""
    src = STDLIB / "lib2to3" / "tests" / "data"
    if not src.is_dir():
        pytest.skip(f"{src} is absent (lib2to3 was removed in Python 3.13)")
    out = tmp_path / "code.jsonl"
    stats = prepare_code(src, out, strip_comments=True)
    bad = dict(stats.bad)
    assert "py2_test_grammar.py" in bad and "SyntaxError" in bad["py2_test_grammar.py"]
    assert "bom.py" in bad and "line 2" in bad["bom.py"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == stats.kept > 0 and not {r["path"] for r in rows} & set(bad)
    for row in rows:
        original = (src / row["path"]).read_bytes()
        assert _comments(row["text"]) == []
        ast.parse(row["text"])  # every kept document parses
        assert len(row["text"]) <= len(original)
    assert stats.kept + stats.empty + len(stats.bad) == len(list(src.rglob("*.py")))
    # the corpus loader reads it as one document per file
    texts = list(iter_texts(f"{out}[:100%]", "train"))
    assert texts == [r["text"] for r in rows]


def test_script_end_to_end_and_errors(repo_root, tmp_path, capsys):
    main = runpy.run_path(str(repo_root / "scripts" / "prepare_code.py"))["main"]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0 and "python scripts/prepare_code.py" in capsys.readouterr().out
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "good.py").write_text('"""doc"""\nx = 1  # one\n')
    (tmp_path / "src" / "pkg" / "broken.py").write_text("def f(:\n")
    (tmp_path / "src" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\ns = '\xe9'\n")
    (tmp_path / "src" / "__pycache__").mkdir()
    (tmp_path / "src" / "__pycache__" / "junk.py").write_text("not python at all(\n")
    stats = main([str(tmp_path / "src"), str(tmp_path / "out.jsonl"), "--strip_comments"])
    captured = capsys.readouterr()
    assert stats.kept == 2 and [r for r, _ in stats.bad] == ["pkg/broken.py"]
    assert "skipped 1 files" in captured.err and "pkg/broken.py: SyntaxError" in captured.err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == [{"text": "s = '\u00e9'\n", "path": "latin.py"}, {"text": "x = 1\n", "path": "pkg/good.py"}]
    with pytest.raises(SystemExit, match="does not exist"):
        main([str(tmp_path / "missing"), str(tmp_path / "x.jsonl")])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit, match="no .py files"):
        main([str(tmp_path / "nothing"), str(tmp_path / "x.jsonl")])
