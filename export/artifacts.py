"""Exported graphs on disk: one directory per precision, cached by checkpoint hash, atomic.

Layout: `<root>/<src>-<tgt>-<hash>/<precision>/`, holding the graphs of export/contract.py
(encoder, decoder, select_past, select_sources) and export.json, with root
`$NMT_ARTIFACTS_DIR` or `artifacts/` in the repository. Each precision directory
is built in a temporary sibling and renamed into place, so a reader sees a whole variant or
none; two processes exporting the same model at once both succeed and one result is kept.
A variant is reused only if its manifest names the same checkpoint hash and graph format:
graphs exported by an older version of this code are replaced, not fed to a newer engine.
The manifest also holds each graph file's sha256, checked whenever the variant is looked up,
so that a corrupt cache (a truncated decoder.onnx) is exported again instead of loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.contract import (
    DECODER_FILE,
    ENCODER_FILE,
    GRAPH_FORMAT,
    MANIFEST_FILE,
    OPSET,
    PRECISIONS,
    SELECT_PAST_FILE,
    SELECT_SOURCES_FILE,
    GraphNames,
)
from export.select_graph import write_select_graphs
from model.checkpoint import model_hash, read_model_config

ARTIFACTS_ENV = "NMT_ARTIFACTS_DIR"
REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

# torch.onnx.export keeps module-level state (opset, export mode), so two pairs exporting at
# once (a first start loading pairs in parallel) could corrupt each other's graphs. Exports
# take turns; a variant already cached is looked up without waiting.
_EXPORT_LOCK = threading.Lock()


def artifacts_root() -> Path:
    """Where exported graphs are cached: $NMT_ARTIFACTS_DIR, else artifacts/ in the repository."""
    env = os.environ.get(ARTIFACTS_ENV)
    return Path(env) if env else REPO / "artifacts"


def model_artifacts_dir(model_dir: Path, root: Path | None = None) -> Path:
    """`<root>/<src>-<tgt>-<hash>`: the cache directory of one checkpoint."""
    _, meta = read_model_config(model_dir)
    pair = f"{meta['source_lang']}-{meta['target_lang']}"
    return (root or artifacts_root()) / f"{pair}-{model_hash(model_dir)}"


@dataclass(frozen=True)
class GraphSet:
    """The encoder and decoder graphs of one model at one precision."""

    directory: Path
    precision: str

    @property
    def encoder(self) -> Path:
        return self.directory / ENCODER_FILE

    @property
    def decoder(self) -> Path:
        return self.directory / DECODER_FILE

    @property
    def select_past(self) -> Path:
        return self.directory / SELECT_PAST_FILE

    @property
    def select_sources(self) -> Path:
        return self.directory / SELECT_SOURCES_FILE

    def manifest(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.directory / MANIFEST_FILE).read_text())
        return result


def export_graphs(
    model_dir: Path, out_dir: Path, precisions: Iterable[str] = ("fp32",)
) -> dict[str, GraphSet]:
    """Export the requested precisions under out_dir; keeps variants already there for the model."""
    model_dir = Path(model_dir)
    wanted = list(dict.fromkeys(precisions))
    unknown = set(wanted) - set(PRECISIONS)
    if unknown:
        raise ValueError(f"unknown precision(s) {sorted(unknown)}; choose from {PRECISIONS}")
    version = model_hash(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = _ensure(out_dir / "fp32", version, lambda tmp: _export_fp32(model_dir, tmp))
    built = {"fp32": fp32}
    if "int8" in wanted:
        from export.variants import quantize_int8

        built["int8"] = _ensure(
            out_dir / "int8", version, lambda tmp: quantize_int8(fp32.directory, tmp)
        )
    if "fp16" in wanted:
        from export.variants import convert_fp16

        built["fp16"] = _ensure(
            out_dir / "fp16", version, lambda tmp: convert_fp16(fp32.directory, tmp)
        )
    return {p: built[p] for p in wanted}


def ensure_graphs(model_dir: Path, precision: str, root: Path | None = None) -> GraphSet:
    """The cached graphs of a checkpoint at a precision, exported first when missing."""
    out_dir = model_artifacts_dir(Path(model_dir), root)
    return export_graphs(Path(model_dir), out_dir, [precision])[precision]


def graphs_cached(model_dir: Path, precision: str, root: Path | None = None) -> bool:
    """True if this checkpoint's graphs at this precision (and the fp32 graphs every variant
    is made from) are cached and current, so that ensure_graphs exports nothing: the cache's
    own test (hash, graph format, checksums), a stale or corrupt variant counts as missing."""
    directory = model_artifacts_dir(Path(model_dir), root)
    version = model_hash(Path(model_dir))
    try:
        return all(_is_current(directory / v, version) for v in dict.fromkeys(("fp32", precision)))
    except (OSError, ValueError):
        return False


def _export_fp32(model_dir: Path, out_dir: Path) -> None:
    from export.exporter import export_fp32
    from model.checkpoint import load_model

    export_fp32(load_model(model_dir).model, out_dir)


def _is_current(directory: Path, version: str) -> bool:
    manifest = directory / MANIFEST_FILE
    if not manifest.exists():
        return False
    values = json.loads(manifest.read_text())
    if values.get("model_hash") != version or values.get("format") != GRAPH_FORMAT:
        return False
    # Manifests written before checksums were recorded have none, and are trusted as before.
    expected = values.get("sha256")
    if expected is not None and expected != _checksums(directory):
        log.warning("%s: graph files do not match their checksums; exporting again", directory)
        return False
    return True


def _checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file of a variant but its manifest."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }


def _ensure(final: Path, version: str, build: Callable[[Path], None]) -> GraphSet:
    """Build a precision directory in a temporary sibling and rename it into place."""
    precision = final.name
    if _is_current(final, version):
        return GraphSet(final, precision)
    with _EXPORT_LOCK, _exclusive(final.parent):
        if _is_current(final, version):  # another thread or process exported it meanwhile
            return GraphSet(final, precision)
        _build(final, version, build)
    return GraphSet(final, precision)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """An advisory lock on a directory, held across processes (the workers of one service
    starting at once export each variant once, the others waiting for it); flock on the
    directory itself, so that no lock file is left beside the variants."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (closing releases the lock)


def _build(final: Path, version: str, build: Callable[[Path], None]) -> None:
    precision = final.name
    log.info("%s: exporting the %s graphs", final.parent.name, precision)
    tmp = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=final.parent))
    try:
        build(tmp)
        write_select_graphs(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a service running as another user reads it
        (tmp / MANIFEST_FILE).write_text(json.dumps(_manifest(tmp, version, precision), indent=2))
        _publish(tmp, final, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path, version: str) -> None:
    """Rename tmp to final; a stale final (another checkpoint's graphs) is moved aside first."""
    if final.exists() and not _is_current(final, version):
        stale = Path(tempfile.mkdtemp(prefix=f".{final.name}-stale-", dir=final.parent))
        final.rename(stale / final.name)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        # Another process published the same variant first; its graphs are as good as ours.
        if not _is_current(final, version):
            raise


def _manifest(directory: Path, version: str, precision: str) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    decoder = onnx.load(str(directory / DECODER_FILE), load_external_data=False)
    n_layers = sum(1 for i in decoder.graph.input if i.name.startswith("past_self_k_"))
    names = GraphNames(n_layers)
    return {
        "model_hash": version,
        "format": GRAPH_FORMAT,
        "precision": precision,
        "opset": OPSET,
        "n_decoder_layers": n_layers,
        "encoder": {"inputs": names.encoder_inputs, "outputs": names.encoder_outputs},
        "decoder": {"inputs": names.decoder_inputs, "outputs": names.decoder_outputs},
        "select_past": {"inputs": names.select_past_inputs, "outputs": names.select_past_outputs},
        "select_sources": {
            "inputs": names.select_sources_inputs,
            "outputs": names.select_sources_outputs,
        },
        "sha256": _checksums(directory),
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
