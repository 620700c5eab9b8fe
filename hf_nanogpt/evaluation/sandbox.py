"""The sandbox that runs untrusted, model-written Python (HumanEval programs, future RL rewards).

Three isolation levels; the strongest the machine allows is used and named in every result
(`ExecutionResult.isolation`) and by `sandbox_isolation()`:

1. `bubblewrap` (Debian's `bwrap`, installed by `make install` when root): each program runs in
   fresh user, pid, network, mount, IPC and UTS namespaces. Its root file system holds only `/usr`
   (read-only), a new `/proc` and `/dev`, and its private temporary directory (the only writable
   place): no `/etc/shadow`, no home folders, no other process to signal (the evaluator is outside
   its pid namespace), no network. When the sandbox's init ends (the program finished, or the parent
   killed it at the timeout) the kernel kills every process left in the pid namespace, including any
   that called `setsid`. Started as root, the program also runs under a uid of its own (see 2).
2. `unprivileged-user` (root, no bubblewrap): the program runs under a fresh uid from a reserved range
   (no file or process on the machine belongs to it), in its own session, with a network namespace
   (user + net). It cannot signal the evaluator, read root's files or `/proc/<pid>/environ`, or
   write where only root may; world-writable folders (`/tmp`, `/dev/shm`) stay writable. At the
   timeout every process of that uid is killed, wherever it moved (setsid included).
3. `same-user` (neither): resource limits, its own session, a network namespace when the kernel
   allows one, and the in-process guards below. The program runs as the evaluating user and can do
   what that user can; a program that calls `setsid` may outlive the timeout. Not a security
   boundary: evaluate untrusted models in a container or install bubblewrap.

Every level sets resource limits (address space, CPU seconds, size of written files, no core
dumps and, under a uid of its own, a process count) and in-process guards that stop accidents, not
attacks (`socket`, `subprocess`, `ctypes`, ... unimportable; `os.system`, `os.kill`, `shutil.rmtree`,
... raise `PermissionError`): a program can undo those in two lines, which is why the levels above
do not rely on them.

Passing is the harness's own marker: after the program's last line has run without an exception,
the bootstrap writes a random per-run token to a pipe only the parent reads. A program that ends
early with status 0 (`sys.exit(0)`, `os._exit(0)`, an `atexit` hook after a failed assert, a signal)
has not passed. The marker stops such exits; code written to read the token out of the harness's
own frame could still forge it, so the isolation, not the marker, is the security boundary.
"""

import functools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

LEVELS = ("bubblewrap", "unprivileged-user", "same-user")
# A uid range no distribution allocates (systemd's dynamic users stop at 65519; container id maps are
# usually below 2^31 too): each run draws a uid here that no process on the machine uses.
UID_BASE, UID_SPAN = 1_900_000_000, 90_000_000
MAX_PROCESSES = 16  # processes a program may have at once under a uid of its own (fork bombs stop here)

# Code that runs in the child before the program: settings from argv[1] (JSON), the program from the
# file argv[2]. A string, so the child needs nothing but the interpreter (no site-packages).
_BOOTSTRAP = r'''
import json, os, sys
def _harness(cfg, prog_path):
    import resource
    mem = cfg["memory_mb"] * 1024 * 1024
    limits = [("RLIMIT_AS", mem), ("RLIMIT_DATA", mem), ("RLIMIT_CPU", cfg["cpu_s"]),
              ("RLIMIT_FSIZE", cfg["fsize"]), ("RLIMIT_CORE", 0)]
    if cfg["nproc"]:
        limits.append(("RLIMIT_NPROC", cfg["nproc"]))
    for name, value in limits:
        if hasattr(resource, name):
            try:
                resource.setrlimit(getattr(resource, name), (value, value))
            except (ValueError, OSError):
                pass
    network = cfg["network"]
    if network is None and sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x40000000) == 0:                    # CLONE_NEWNET (privileged)
            network = "network namespace"
        elif libc.unshare(0x10000000 | 0x40000000) == 0:     # CLONE_NEWUSER | CLONE_NEWNET
            network = "user+network namespace"
        else:
            network = "unavailable (errno %d); socket module disabled only" % ctypes.get_errno()
        del ctypes, libc
    os.environ["HF_NANOGPT_SANDBOX_NETWORK"] = network or "not attempted"
    token = os.read(cfg["token_fd"], 64)
    os.close(cfg["token_fd"])
    marker_fd = cfg["marker_fd"]
    source = open(prog_path, encoding="utf-8").read()

    def disabled(qualname):
        def stub(*args, **kwargs):
            raise PermissionError(qualname + " is disabled in the sandbox")
        return stub

    import builtins, shutil, posix
    for mod, names in ((os, cfg["os_names"]), (posix, cfg["os_names"]), (shutil, cfg["shutil_names"])):
        for n in names:
            if hasattr(mod, n):
                setattr(mod, n, disabled(mod.__name__ + "." + n))
    builtins.help = disabled("help")
    for m in cfg["blocked_modules"]:
        sys.modules[m] = None   # a None entry makes `import m` raise ImportError
    exit_, write, flush = os._exit, os.write, (sys.stdout.flush, sys.stderr.flush)
    sys.argv = ["program.py"]
    g = {"__name__": "__main__", "__file__": "program.py", "__builtins__": builtins}
    try:
        exec(compile(source, "program.py", "exec"), g)
    except SystemExit as err:  # the program ended itself before its last line: not a pass
        print("program.py ended with SystemExit(%r) before its last line ran" % (err.code,), file=sys.stderr)
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    else:
        for f in flush:
            f()
        write(marker_fd, token)
        exit_(0)
    for f in flush:
        f()
    exit_(code)
_harness(json.loads(sys.argv[1]), sys.argv[2])
'''

# Functions an evaluated program has no business calling (process control, file-system damage,
# leaving the temp dir, changing identity). Guards against accidents; see the module docstring.
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


@dataclass(frozen=True)
class Isolation:
    """How programs run on this machine: `level` (one of `LEVELS`), the interpreter, and whether each
    run gets a uid of its own."""

    level: str
    interpreter: str
    own_uid: bool
    note: str = ""

    def describe(self) -> str:
        who = "a fresh unprivileged uid per run" if self.own_uid else "the evaluating user's uid"
        return f"{self.level} ({who}; {self.interpreter}){'; ' + self.note if self.note else ''}"


def _world_usable(path: str) -> bool:
    """Whether a user other than the owner can reach and run `path` (every parent folder o+x)."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    while True:
        if not os.stat(folder).st_mode & 0o001:
            return False
        if folder == "/":
            break
        folder = os.path.dirname(folder)
    return bool(os.stat(path).st_mode & 0o005 == 0o005)


def _interpreter(root: bool) -> str:
    """The Python the program runs on: this one's base interpreter, or (when a fresh uid could not
    reach it, e.g. pyenv under /root) the system's `/usr/bin/python3`. Programs need only the stdlib."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    if not root or _world_usable(base):
        return base
    system = shutil.which("python3", path="/usr/bin:/bin")
    return os.path.realpath(system) if system and _world_usable(system) else base


def _fresh_uid() -> int:
    """A uid of the reserved range that no running process has."""
    used = {uid for _, uid in _processes()}
    while True:
        uid = UID_BASE + random.SystemRandom().randrange(UID_SPAN)
        if uid not in used:
            return uid


def _processes():
    """(pid, real uid) of every live process, from /proc (zombies are dead already: skipped)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if line.startswith(("State:", "Uid:")))
                if fields["State"].split()[0] in ("Z", "X"):
                    continue
                uid = int(fields["Uid"].split()[0])
            except (OSError, KeyError, ValueError, IndexError):
                continue
            yield int(entry), uid


def kill_uid(uid: int) -> int:
    """SIGKILL every process of `uid` until none is left (a fork between scans is caught by the next
    scan; the uid is the run's own, so nothing else dies). Returns how many were killed."""
    killed = 0
    for _ in range(100):
        pids = [pid for pid, u in _processes() if u == uid]
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)  # let the kernel reap them before the next scan
    return killed


def _bwrap_args(workdir: str, interpreter: str, env: dict, uid_inside: int | None) -> list[str]:
    """bubblewrap's command line: new namespaces, /usr read-only, the temp dir the only writable place."""
    args = [shutil.which("bwrap"), "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged-usr links, or real folders
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = os.path.dirname(os.path.dirname(interpreter))  # .../bin/python3 -> its installation
    if not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    if uid_inside is not None:  # root without a usable interpreter for other uids: a uid inside the userns
        args += ["--unshare-user", "--uid", str(uid_inside), "--gid", str(uid_inside)]
    args += ["--bind", workdir, workdir, "--chdir", workdir, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args + ["--"]


@functools.lru_cache(maxsize=None)
def sandbox_isolation() -> Isolation:
    """The isolation this machine gives (probed once per process: bubblewrap must start a program)."""
    root = os.geteuid() == 0 and sys.platform.startswith("linux")
    interpreter = _interpreter(root)
    own_uid = root and _world_usable(interpreter)
    if shutil.which("bwrap"):
        probe = run_program("pass", timeout=30, _isolation=Isolation("bubblewrap", interpreter, own_uid))
        if probe.status == "passed":
            note = "" if own_uid or not root else "root outside its user namespace: no interpreter other uids can run"
            return Isolation("bubblewrap", interpreter, own_uid, note)
    if own_uid:
        return Isolation("unprivileged-user", interpreter, True, "world-writable folders stay writable")
    return Isolation("same-user", interpreter, False, "no security boundary: install bubblewrap")


@dataclass
class ExecutionResult:
    """Outcome of one sandboxed run.

    `status` is `"passed"` (the program's last line ran and the harness wrote its marker), `"failed"`
    (an exception, an assertion, a resource limit, a disabled function, or an early exit of any
    status) or `"timeout"` (killed after `timeout` seconds of wall time). `isolation` names the level.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 1024, max_output_bytes: int = 1 << 20,
                _isolation: Isolation | None = None) -> ExecutionResult:
    """Run the Python source `program` in the sandbox and report how it ended.

    `timeout` is wall-clock seconds (CPU time is capped one second above it as a backstop);
    `memory_mb` caps the child's address space; `max_output_bytes` caps each of stdout and stderr
    (and any file the program writes): a program exceeding it is killed by `SIGXFSZ`.
    """
    if not isinstance(program, str):
        raise TypeError(f"run_program: program must be a str, got {type(program).__name__}")
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"run_program: timeout ({timeout}) and memory_mb ({memory_mb}) must be positive")
    iso = _isolation or sandbox_isolation()
    uid = _fresh_uid() if iso.own_uid else None
    workdir = os.path.realpath(tempfile_dir())
    token_r, token_w = os.pipe()
    marker_r, marker_w = os.pipe()
    proc = None
    try:
        if uid is not None:  # the program's uid owns its temp dir and nothing else
            os.chown(workdir, uid, uid)
        prog_path = os.path.join(workdir, "program.py")
        with open(prog_path, "w", encoding="utf-8") as f:
            f.write(program)
        cfg = dict(memory_mb=int(memory_mb), cpu_s=int(-(-timeout // 1)) + 1, fsize=int(max_output_bytes),
                   nproc=MAX_PROCESSES if uid is not None else 0, token_fd=token_r, marker_fd=marker_w,
                   network="network namespace (bubblewrap)" if iso.level == "bubblewrap" else None,
                   os_names=_OS_NAMES, shutil_names=_SHUTIL_NAMES, blocked_modules=_BLOCKED_MODULES)
        env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "HF_NANOGPT_SANDBOX": iso.level}
        command = [iso.interpreter, "-I", "-c", _BOOTSTRAP, json.dumps(cfg), prog_path]
        if iso.level == "bubblewrap":
            command = _bwrap_args(workdir, iso.interpreter, env, None if iso.own_uid or os.geteuid() else 65534) + command
        identity = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
        start = time.perf_counter()
        # output goes to unlinked files outside the program's folder and is read back through their
        # descriptors: a symlink the program plants cannot make the parent read another file
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    pass_fds=(token_r, marker_w), start_new_session=True, **identity)
            os.close(token_r), os.close(marker_w)
            token_r = marker_w = None
            token = secrets.token_hex(16).encode()
            os.write(token_w, token)
            os.close(token_w)
            token_w = None
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
                if uid is not None:
                    kill_uid(uid)  # whatever left the process group (setsid) dies too
            duration = time.perf_counter() - start
            marker = _read_pipe(marker_r)
            stdout, stderr = _read_capped(out, max_output_bytes), _read_capped(err, max_output_bytes)
        rc = proc.returncode
        passed = not timed_out and rc == 0 and marker == token
        status = "timeout" if timed_out else ("passed" if passed else "failed")
        if not timed_out and rc == 0 and not passed:
            stderr += "\n[sandbox] exit status 0 without the harness's success marker: the program ended early\n"
        return ExecutionResult(status=status, returncode=None if timed_out else rc, stdout=stdout,
                               stderr=stderr, duration_s=duration, isolation=iso.describe())
    finally:
        for fd in (token_r, token_w, marker_w, marker_r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)


def tempfile_dir() -> str:
    """A new private temporary folder (mode 700) for one run."""
    return tempfile.mkdtemp(prefix="hf_nanogpt_sandbox_")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it is its own session leader) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read_pipe(fd: int, limit: int = 4096) -> bytes:
    """What the child wrote to the marker pipe, without blocking (a survivor at the same-user level
    could still hold its write end open)."""
    os.set_blocking(fd, False)
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = os.read(fd, limit - size)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_capped(file, limit: int) -> str:
    file.seek(0)
    return file.read(limit).decode("utf-8", errors="replace")


__all__ = ["ExecutionResult", "Isolation", "LEVELS", "kill_uid", "run_program", "sandbox_isolation"]
