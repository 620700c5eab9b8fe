"""`LocalHub`: a local stand-in for the Hugging Face Hub's HTTP API, for offline upload/download tests.

A small HTTP server on 127.0.0.1 that implements what `HfApi.create_repo`, `create_branch`,
`upload_folder` / `create_commit` (validate-yaml, preupload, the LFS batch API, LFS PUT + verify, the
ndjson commit), `repo_info` / `model_info`, `list_repo_tree` and `hf_hub_download` (resolve) send, and
stores each branch as a plain folder `root/<user>/<name>/<branch>/`. huggingface_hub's client code runs
unchanged against it (`HfApi(endpoint=hub.url)` or `HF_ENDPOINT=hub.url`): only the transport is local.

Write calls need `Authorization: Bearer <TOKEN>`, as on the Hub. `requests` logs (method, path);
`unhandled` lists requests it could not answer, so a test can assert the client used nothing else.
Older commits are not kept: a revision is a branch or the commit at a branch's head.
"""

import base64
import hashlib
import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

TOKEN = "hf_local_test_token"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """A local Hub: `root/<user>/<name>/<branch>/...` holds the files of each branch, `root/.lfs/<oid>`
    the LFS objects. `requests` logs (method, path); `unhandled` lists requests it could not answer."""

    VALID_PIPELINE_TAGS = {"text-generation", "text2text-generation", "fill-mask", "text-classification"}

    def __init__(self, root: Path):
        self.root = root
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: commit}, "commits": [...]}
        self.lfs_uploads: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[str] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None):
                body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _dispatch(self):
                path = urlsplit(self.path).path
                hub.requests.append((self.command, path))
                body = self._body() if self.command in ("POST", "PUT") else b""
                # LFS storage takes pre-signed uploads (no token); every Hub API call must be authenticated
                write = self.command in ("POST", "PUT") and not path.startswith("/lfs-storage/")
                if write and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                with hub.lock:
                    status, payload, headers, raw = hub.handle(self.command, path, body, self.headers, self._base())
                self._send(status, payload, headers, raw)

            def _base(self) -> str:
                return f"http://{self.headers['Host']}"

            do_GET = do_HEAD = do_POST = do_PUT = _dispatch

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ---- helpers
    def branch_dir(self, repo_id: str, branch: str = "main") -> Path:
        return self.root / repo_id / branch

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        folder = self.branch_dir(repo_id, branch)
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    def branch_of(self, repo_id: str, revision: str) -> str | None:
        """The branch a revision names: a branch, or the commit at a branch's head (older commits are not kept)."""
        branches = self.repos[repo_id]["branches"]
        return revision if revision in branches else next((b for b, oid in branches.items() if oid == revision), None)

    @staticmethod
    def _error(status: int, code: str, message: str):
        return status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, None

    # ---- the endpoints
    def handle(self, method: str, path: str, body: bytes, headers, base: str):
        m = re.fullmatch(r"/api/repos/create", path)
        if m and method == "POST":
            data = json.loads(body)
            repo_id = f"{data.get('organization') or 'local-user'}/{data['name']}"
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{base}/{repo_id}"}, None, None
            private = data.get("visibility") == "private" or bool(data.get("private"))
            self.repos[repo_id] = {"private": private, "branches": {"main": "0" * 40}, "commits": []}
            self.branch_dir(repo_id).mkdir(parents=True)
            return 200, {"url": f"{base}/{repo_id}", "name": repo_id}, None, None
        if path == "/api/validate-yaml" and method == "POST":
            errors = self.validate_card(json.loads(body)["content"])
            return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}, None, None
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
        if m and method == "POST":
            repo_id, action, revision = m.group(1), m.group(2), unquote(m.group(3))
            if repo_id not in self.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            repo = self.repos[repo_id]
            if action == "branch":
                if revision in repo["branches"]:
                    return 409, {"error": f"Reference {revision} already exists"}, None, None
                src = json.loads(body or b"{}").get("startingPoint") or "main"
                shutil.copytree(self.branch_dir(repo_id, src), self.branch_dir(repo_id, revision))
                repo["branches"][revision] = repo["branches"][src]
                return 200, {}, None, None
            if revision not in repo["branches"]:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            if action == "preupload":
                files = []
                for f in json.loads(body)["files"]:
                    sample = base64.b64decode(f["sample"])
                    lfs = f["path"].endswith((".safetensors", ".bin", ".pt")) or b"\0" in sample or f["size"] > 10 << 20
                    existing = self.branch_dir(repo_id, revision) / f["path"]
                    oid = None
                    if existing.is_file():
                        data = existing.read_bytes()
                        oid = hashlib.sha256(data).hexdigest() if lfs else _git_blob_sha1(data)
                    files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                                  "oid": oid})
                return 200, {"files": files, "commitOid": repo["branches"][revision]}, None, None
            return self.commit(repo_id, revision, body, base)
        m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if m and method == "POST":
            request = json.loads(body)
            assert request["operation"] == "upload" and "basic" in request["transfers"]
            objects = []
            for obj in request["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if not (self.root / ".lfs" / obj["oid"]).is_file():
                    entry["actions"] = {"upload": {"href": f"{base}/lfs-storage/{obj['oid']}"},
                                        "verify": {"href": f"{base}/lfs-storage/{obj['oid']}/verify"}}
                objects.append(entry)
            lfs_json = {"Content-Type": "application/vnd.git-lfs+json"}
            return 200, {"transfer": "basic", "objects": objects}, lfs_json, None
        m = re.fullmatch(r"/lfs-storage/([0-9a-f]{64})(/verify)?", path)
        if m and method == "PUT" and not m.group(2):
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return 400, {"error": "sha256 mismatch"}, None, None
            (self.root / ".lfs").mkdir(exist_ok=True)
            (self.root / ".lfs" / m.group(1)).write_bytes(body)
            self.lfs_uploads.append(m.group(1))
            return 200, None, None, b""
        if m and method == "POST" and m.group(2):
            obj = self.root / ".lfs" / m.group(1)
            ok = obj.is_file() and obj.stat().st_size == json.loads(body)["size"]
            return (200, {"success": True}, None, None) if ok else (422, {"error": "object missing"}, None, None)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m and method == "GET":  # repo_info / model_info
            repo_id, revision = m.group(1), unquote(m.group(2) or "main")
            if repo_id not in self.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            branch = self.branch_of(repo_id, revision)
            if branch is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return 200, {"id": repo_id, "private": self.repos[repo_id]["private"],
                         "sha": self.repos[repo_id]["branches"][branch],
                         "siblings": [{"rfilename": f} for f in self.files(repo_id, branch)]}, None, None
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?", path)
        if m and method == "GET":  # list_repo_tree (transformers looks for additional_chat_templates/)
            repo_id, revision, sub = m.group(1), unquote(m.group(2)), unquote(m.group(3) or "")
            branch = self.branch_of(repo_id, revision) if repo_id in self.repos else None
            folder = self.branch_dir(repo_id, branch or "") / sub
            if branch is None or not folder.is_dir():
                return self._error(404, "EntryNotFound", f"{sub or '/'} does not exist on {revision}")
            top = self.branch_dir(repo_id, branch)
            return 200, [{"type": "directory" if p.is_dir() else "file", "path": p.relative_to(top).as_posix(),
                          "oid": _git_blob_sha1(p.read_bytes()) if p.is_file() else "0" * 40,
                          "size": p.stat().st_size if p.is_file() else 0} for p in sorted(folder.iterdir())], None, None
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            repo_id, revision, filename = m.group(1), unquote(m.group(2)), unquote(m.group(3))
            if repo_id not in self.repos:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            branch = self.branch_of(repo_id, revision)
            if branch is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            file = self.branch_dir(repo_id, branch) / filename
            if not file.is_file():
                return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}")
            data = file.read_bytes()
            return 200, None, {"ETag": f'"{_git_blob_sha1(data)}"',
                               "X-Repo-Commit": self.repos[repo_id]["branches"][branch]}, data
        self.unhandled.append(f"{method} {path}")
        return 404, {"error": f"LocalHub does not implement {method} {path}"}, None, None

    def commit(self, repo_id: str, revision: str, body: bytes, base: str):
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "the first ndjson line must be the commit header"}, None, None
        writes = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                writes[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                obj = self.root / ".lfs" / value["oid"]
                if not obj.is_file():
                    message = f"LFS object {value['oid']} for {value['path']} was never uploaded"
                    return 422, {"error": message}, None, None
                writes[value["path"]] = obj.read_bytes()
            else:
                return 400, {"error": f"LocalHub does not implement commit operation {line['key']}"}, None, None
        folder = self.branch_dir(repo_id, revision)
        for name, data in writes.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        repo = self.repos[repo_id]
        oid = hashlib.sha1(repr((repo["branches"][revision], sorted(writes))).encode() + body).hexdigest()
        repo["branches"][revision] = oid
        repo["commits"].append({"oid": oid, "revision": revision, "summary": lines[0]["value"]["summary"],
                                "files": sorted(writes)})
        answer = {"commitUrl": f"{base}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        return 200, answer, None, None

    def validate_card(self, content: str) -> list[str]:
        """The checks the Hub makes on a model card's metadata that a generator can get wrong."""
        m = re.match(r"---\n(.*?)\n---\n", content, re.S)
        if not m:
            return []  # a card without metadata is allowed (the Hub warns)
        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            return [f"YAML front matter does not parse: {e}"]
        if not isinstance(meta, dict):
            return ["YAML front matter must be a mapping"]
        errors = []
        if "tags" in meta and not (isinstance(meta["tags"], list) and all(isinstance(t, str) for t in meta["tags"])):
            errors.append('"tags" must be a list of strings')
        if "pipeline_tag" in meta and meta["pipeline_tag"] not in self.VALID_PIPELINE_TAGS:
            errors.append(f'"pipeline_tag" {meta["pipeline_tag"]!r} is not a known pipeline')
        for key in ("license", "library_name"):
            if key in meta and not isinstance(meta[key], str):
                errors.append(f'"{key}" must be a string')
        return errors

    def start(self) -> "LocalHub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
