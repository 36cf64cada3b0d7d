"""service.files: the translated-file store (random ids, expiry, a bound, safe names)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.errors import FileNotFound
from service.files import FileStore, safe_name


def test_put_get_and_names_are_never_paths(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", ttl_s=60, max_files=5)
    stored = store.put(b"Ein Hund.", "../../x.de.txt", "text/plain")
    assert store.get(stored.id).path.read_bytes() == b"Ein Hund."
    assert {p.parent for p in (tmp_path / "store").iterdir()} == {tmp_path / "store"}
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == [
        f"{stored.id}.data",
        f"{stored.id}.json",
    ]
    for bad in ("../store", "x", stored.id + "/../..", "A" * 100):
        with pytest.raises(FileNotFound):
            store.get(bad)


def test_expiry_and_bound(tmp_path: Path) -> None:
    store = FileStore(tmp_path, ttl_s=60, max_files=2)
    old = store.put(b"1", "a.txt", "text/plain")
    past = time.time() - 120
    os.utime(tmp_path / f"{old.id}.json", (past, past))
    with pytest.raises(FileNotFound, match="expired"):
        store.get(old.id)
    ids = [store.put(b"x", f"{i}.txt", "text/plain").id for i in range(3)]
    with pytest.raises(FileNotFound):
        store.get(ids[0])
    assert [store.get(i).id for i in ids[1:]] == ids[1:]


@pytest.mark.parametrize(
    ("name", "suffix", "safe"),
    [
        ("../../etc/passwd.txt", ".txt", "passwd.txt"),
        ("C:\\Users\\me\\notes.TXT", ".txt", "notes.txt"),
        ("my notes (1).html", ".html", "my_notes_1.html"),
        ("....html", ".html", "file.html"),
    ],
)
def test_safe_name(name: str, suffix: str, safe: str) -> None:
    assert safe_name(name, suffix) == safe
