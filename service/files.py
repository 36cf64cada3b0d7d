"""Translated files: a bounded store in one directory, with expiry.

Each stored file is named by a random id the server makes (`secrets.token_urlsafe`); the
uploader's file name is kept only as metadata for the download's Content-Disposition and is
never part of a path. The store holds at most `max_files` files for `ttl_s` seconds; the
oldest go first when it is full.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.errors import FileNotFound

_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# What a download name may keep of the uploaded one: letters, digits, dot, dash, underscore.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Stored:
    id: str
    name: str
    media_type: str
    path: Path


def safe_name(name: str, suffix: str) -> str:
    """A download name made from the uploaded one: no directories, only safe characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[: -len(suffix)] if base.lower().endswith(suffix) else base
    stem = _UNSAFE.sub("_", stem).strip("._") or "file"
    return f"{stem[:80]}{suffix}"


class FileStore:
    """Files kept for ttl_s in directory, at most max_files; safe for concurrent requests."""

    def __init__(self, directory: Path, *, ttl_s: float, max_files: int) -> None:
        self.directory = Path(directory)
        self.ttl_s = ttl_s
        self.max_files = max_files
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)

    def _remove(self, meta: Path) -> None:
        meta.with_suffix(".data").unlink(missing_ok=True)
        meta.unlink(missing_ok=True)

    def expire(self) -> None:
        """Drop what is past its time, then the oldest until there is room for one more."""
        with self._lock:
            now = time.time()
            metas = []
            for meta in self._files():
                try:
                    expired = now - meta.stat().st_mtime > self.ttl_s
                except FileNotFoundError:
                    continue
                if expired:
                    self._remove(meta)
                else:
                    metas.append(meta)
            while len(metas) >= self.max_files:
                self._remove(metas.pop(0))

    def put(self, data: bytes, name: str, media_type: str) -> Stored:
        self.expire()
        file_id = secrets.token_urlsafe(24)
        data_path = self.directory / f"{file_id}.data"
        data_path.write_bytes(data)
        meta = {"name": name, "media_type": media_type}
        (self.directory / f"{file_id}.json").write_text(json.dumps(meta), "utf-8")
        return Stored(file_id, name, media_type, data_path)

    def get(self, file_id: str) -> Stored:
        """The stored file, or FileNotFound for an id never made here or expired."""
        if not _ID.fullmatch(file_id):
            raise FileNotFound("no such file")
        meta_path = self.directory / f"{file_id}.json"
        data_path = self.directory / f"{file_id}.data"
        try:
            if time.time() - meta_path.stat().st_mtime > self.ttl_s:
                self._remove(meta_path)
                raise FileNotFound("the file has expired")
            meta = json.loads(meta_path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            raise FileNotFound("no such file (or it has expired)") from None
        if not data_path.exists():
            raise FileNotFound("no such file (or it has expired)")
        return Stored(file_id, meta["name"], meta["media_type"], data_path)
