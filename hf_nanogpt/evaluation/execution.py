"""Run untrusted, model-written Python in a sandboxed subprocess (HumanEval), and pass@k.

Each program runs in a fresh interpreter (`python -I`, so no user site, no `PYTHON*` variables) in
its own session and a private temporary directory that is deleted afterwards. Before the program's
first line runs, the child:

1. sets resource limits: address space (`memory_mb`), CPU seconds, size of written files (stdout and
   stderr go to files, so a print loop cannot fill the parent's memory), no core dumps;
2. cuts the network: `unshare(CLONE_NEWNET)` (or a user + network namespace when unprivileged) leaves
   the process with no interfaces but an unconfigured loopback; where namespaces are unavailable that
   step is skipped and reported, and the next one still applies;
3. makes `socket`, `subprocess`, `ctypes`, `multiprocessing`, `resource` and friends unimportable, and
   replaces destructive or escaping functions of `os`/`posix`/`shutil` (`system`, `fork`, `exec*`,
   `kill`, `remove`, `rmtree`, `chdir`, ...) with stubs that raise `PermissionError`.

The parent enforces the wall-clock timeout by killing the child's whole process group. This is the
kind of guard OpenAI's human-eval harness uses: it stops accidents (infinite loops, memory blow-ups,
a stray `os.system("rm -rf ...")`) but an in-process guard is not a security boundary against code
written to escape it; run evaluations of untrusted models inside a container as well.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# Code that runs in the child before the program. It reads its settings from argv[1] (JSON) and the
# program from the file argv[2]. Kept as a string so the child needs nothing but the interpreter.
_BOOTSTRAP = r'''
import json, sys
cfg = json.loads(sys.argv[1])
prog_path = sys.argv[2]
import os, resource
mem = cfg["memory_mb"] * 1024 * 1024
for name, value in (("RLIMIT_AS", mem), ("RLIMIT_DATA", mem), ("RLIMIT_CPU", cfg["cpu_s"]),
                    ("RLIMIT_FSIZE", cfg["fsize"]), ("RLIMIT_CORE", 0)):
    if hasattr(resource, name):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
network = "not attempted"
if sys.platform.startswith("linux"):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000) == 0:                    # CLONE_NEWNET (privileged)
        network = "network namespace"
    elif libc.unshare(0x10000000 | 0x40000000) == 0:     # CLONE_NEWUSER | CLONE_NEWNET
        network = "user+network namespace"
    else:
        network = "unavailable (errno %d); socket module disabled only" % ctypes.get_errno()
    del ctypes, libc
os.environ["HF_NANOGPT_SANDBOX_NETWORK"] = network
source = open(prog_path, encoding="utf-8").read()

def _disabled(qualname):
    def stub(*args, **kwargs):
        raise PermissionError(qualname + " is disabled in the sandbox")
    return stub

import builtins, shutil, posix
for mod, names in ((os, cfg["os_names"]), (posix, cfg["os_names"]), (shutil, cfg["shutil_names"])):
    for n in names:
        if hasattr(mod, n):
            setattr(mod, n, _disabled(mod.__name__ + "." + n))
builtins.help = _disabled("help")
for m in cfg["blocked_modules"]:
    sys.modules[m] = None   # a None entry makes `import m` raise ImportError
del json, resource, builtins, posix, shutil, cfg, mem, mod, names, n
g = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
exec(compile(source, "program.py", "exec"), g)
'''

# Functions an evaluated program has no business calling (process control, file-system damage,
# leaving the temp dir, changing identity).
_OS_NAMES = [
    "system", "popen", "fork", "forkpty", "vfork", "kill", "killpg", "abort", "putenv", "unsetenv",
    "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "ftruncate",
    "chdir", "fchdir", "chroot", "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "link", "symlink",
    "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid", "setregid", "setresgid", "setsid",
    "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "posix_spawn", "posix_spawnp", "plock", "register_at_fork", "mknod", "mkfifo",
]
_SHUTIL_NAMES = ["rmtree", "move", "chown", "copytree", "make_archive", "unpack_archive", "which", "disk_usage"]
_BLOCKED_MODULES = [
    "socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio", "http", "urllib", "urllib.request",
    "ftplib", "smtplib", "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing",
    "concurrent", "concurrent.futures", "ctypes", "_ctypes", "resource", "pty", "signal", "_signal",
    "pdb", "ipdb", "tkinter", "webbrowser", "joblib", "psutil",
]

#: status values of an `ExecutionResult`
STATUSES = ("passed", "failed", "timeout")


@dataclass
class ExecutionResult:
    """Outcome of one sandboxed run.

    `status` is `"passed"` (exit code 0), `"failed"` (an exception, an assertion, a resource limit or
    a disabled function) or `"timeout"` (killed after `timeout` seconds of wall time).
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 1024, max_output_bytes: int = 1 << 20) -> ExecutionResult:
    """Run the Python source `program` in the sandbox and report how it ended.

    `timeout` is wall-clock seconds (CPU time is capped one second above it as a backstop);
    `memory_mb` caps the child's address space; `max_output_bytes` caps each of stdout and stderr
    (and any file the program writes): a program exceeding it is killed by `SIGXFSZ`.
    """
    if not isinstance(program, str):
        raise TypeError(f"run_program: program must be a str, got {type(program).__name__}")
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"run_program: timeout ({timeout}) and memory_mb ({memory_mb}) must be positive")
    cfg = dict(memory_mb=int(memory_mb), cpu_s=int(math.ceil(timeout)) + 1, fsize=int(max_output_bytes),
               os_names=_OS_NAMES, shutil_names=_SHUTIL_NAMES, blocked_modules=_BLOCKED_MODULES)
    workdir = tempfile.mkdtemp(prefix="hf_nanogpt_sandbox_")
    try:
        prog_path = os.path.join(workdir, "program.py")
        with open(prog_path, "w", encoding="utf-8") as f:
            f.write(program)
        out_path, err_path = os.path.join(workdir, "stdout"), os.path.join(workdir, "stderr")
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        start = time.perf_counter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(cfg), prog_path],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,  # own process group: the timeout kill reaches any children
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        duration = time.perf_counter() - start
        stdout, stderr = _read_capped(out_path, max_output_bytes), _read_capped(err_path, max_output_bytes)
        rc = proc.returncode
        status = "timeout" if timed_out else ("passed" if rc == 0 else "failed")
        return ExecutionResult(status=status, returncode=None if timed_out else rc, stdout=stdout,
                               stderr=stderr, duration_s=duration)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it is its own session leader) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read_capped(path: str, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


def humaneval_solution(problem: dict, completion: str) -> str:
    """The solution code for a HumanEval `problem` given a model's `completion`.

    `completion` is either a function body continuing `problem["prompt"]` (the classic HumanEval
    protocol) or a full solution that itself defines `entry_point` (what a chat model writes); in the
    second case the prompt's imports are kept and its stub is not repeated.
    """
    for key in ("prompt", "test", "entry_point"):
        if key not in problem:
            raise KeyError(f"humaneval: problem lacks the key {key!r} (has {sorted(problem)})")
    if f"def {problem['entry_point']}(" in completion:
        imports = "\n".join(l for l in problem["prompt"].splitlines() if l.startswith(("import ", "from ")))
        return imports + "\n\n" + completion
    return problem["prompt"] + completion


def humaneval_test(problem: dict) -> str:
    """The test code run after a solution: the problem's `check` function and the call to it."""
    return f"{problem['test']}\n\ncheck({problem['entry_point']})\n"


def humaneval_program(problem: dict, completion: str) -> str:
    """The whole program that checks `completion` against `problem` (solution, then tests)."""
    return humaneval_solution(problem, completion) + "\n\n" + humaneval_test(problem)


def check_humaneval(problem: dict, completion: str, timeout: float = 5.0, memory_mb: int = 1024) -> ExecutionResult:
    """Execute `completion` against `problem`'s tests in the sandbox."""
    return run_program(humaneval_program(problem, completion), timeout=timeout, memory_mb=memory_mb)


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem (Chen et al. 2021, arXiv:2107.03374, eq. 1):
    1 - C(n - c, k) / C(n, k), evaluated as a product to stay exact for large n."""
    n, c = num_samples, num_correct
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k: need 0 <= num_correct <= num_samples and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


def mean_pass_at_k(outcomes: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """`{"pass@k": mean over problems}` for each k no larger than the smallest sample count."""
    if not outcomes:
        raise ValueError("mean_pass_at_k: no problems")
    n_min = min(len(o) for o in outcomes)
    return {f"pass@{k}": sum(pass_at_k(len(o), sum(map(bool, o)), k) for o in outcomes) / len(outcomes)
            for k in ks if k <= n_min}
