"""Fetch transformers' own common model tests for the installed release (run by `make test-hf-common`).

    python tests/hf_common/fetch.py .hf_tests      # prints the folder to put on PYTHONPATH

The source distribution of transformers on PyPI ships the top-level test modules
(`tests/test_modeling_common.py`, `ModelTesterMixin`, ...) but not the sub-packages they import
(`tests/generation/test_utils.py`, `tests/exporters/test_export.py`,
`tests/utils/test_configuration_utils.py`). The sdist of the *installed* version is downloaded from
PyPI (the one registry this machine reaches), its `tests/` is unpacked as the package
`transformers_tests`, and the missing modules are replaced by empty mixins written here: the
generation behaviour they would test (cached == uncached greedy, static and sliding caches, left
padding) is covered by this project's own tests, and torch.export is out of scope.
Nothing of transformers' code is copied into this repository.
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

STUBS = {
    "generation/test_utils.py": (
        "class GenerationTesterMixin:\n"
        "    \"\"\"Empty stand-in: the sdist does not ship tests/generation (see tests/hf_common/fetch.py).\"\"\"\n"),
    "exporters/test_export.py": (
        "class ExportTesterMixin:\n"
        "    \"\"\"Empty stand-in: the sdist does not ship tests/exporters (see tests/hf_common/fetch.py).\"\"\"\n"),
    "utils/test_configuration_utils.py": "config_common_kwargs = {}\n",
}


def fetch(root: Path) -> Path:
    """Unpack the installed transformers release's tests under `root/<version>/transformers_tests`."""
    import transformers

    version = transformers.__version__
    target = root / version
    package = target / "transformers_tests"
    if (package / "test_modeling_common.py").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", tmp], check=True)
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/tests/" in m.name and m.name.endswith(".py")]
            package.mkdir(parents=True, exist_ok=True)
            for member in members:
                relative = member.name.split("/tests/", 1)[1]
                out = package / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
    for relative, text in STUBS.items():
        out = package / relative
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    for folder in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return target


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1] if len(sys.argv) > 1 else ".hf_tests")).resolve())
