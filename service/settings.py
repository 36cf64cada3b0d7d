"""Service configuration: environment variables with the prefix NMT_ (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Auto precision: fp32 on both devices, the precision whose tokens the PyTorch fallback
# reproduces and whose output does not depend on the batch. The reduced ones are opt-in:
# int8 on the CPU, fp16 on CUDA (what each gains: docs/benchmarks.md).
AUTO_PRECISION = "fp32"


class Settings(BaseSettings):
    """Every knob of the running service; docs/configuration.md's tables list these."""

    model_config = SettingsConfigDict(env_prefix="NMT_", extra="ignore")

    models_dir: Path = Field(
        default=Path("models"),
        description="Directory holding one model directory per language pair "
        "(<src>-<tgt>/config.json, model.safetensors, tokenizer.model); relative to the "
        "working directory.",
    )
    artifacts_dir: Path | None = Field(
        default=None,
        description="Cache of the exported ONNX graphs (<pair>-<model hash>/<precision>/), "
        "exported on first start when missing; default artifacts/ in the repository. Mount it "
        "writable and persistent so restarts skip the export.",
    )
    backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="Inference backend. auto: ONNX Runtime, with the PyTorch engine loaded "
        "beside it as the fallback (used when ORT cannot load or a batch fails in ORT); "
        "onnx: ONNX Runtime only; torch: PyTorch only.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="auto: cuda when ONNX Runtime offers CUDAExecutionProvider (backend "
        "torch: when torch sees a GPU), else cpu. On cuda the PyTorch fallback runs on the "
        "GPU if this torch has CUDA, else on the CPU.",
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        default="auto",
        description="Weights precision. auto: fp32, whose tokens the PyTorch fallback "
        "reproduces. int8 (dynamic int8 ONNX graphs, cpu only) and fp16 (cuda) are opt-in. "
        "The PyTorch fallback runs fp32, or fp16 on a GPU when fp16 is asked for.",
    )
    max_batch_size: int = Field(
        default=32,
        ge=1,
        description="Most sentences in one engine call (static scheduler) or in one "
        "running batch (continuous: per stream and beam size); 1 turns batching off.",
    )
    max_batch_tokens: int = Field(
        default=4096,
        ge=1,
        description="Most source tokens in one engine call, padding included "
        "(sentences x longest sentence).",
    )
    max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="Static scheduler: how long a batch stays open for more sentences after "
        "its first one arrived, when it is neither full nor over the token budget. Under load "
        "batches fill while the engine is busy anyway; this only adds latency to a lone "
        "request. (The continuous scheduler does not wait: an idle engine thread takes a "
        "sentence at once.)",
    )
    scheduler: Literal["continuous", "static"] = Field(
        default="continuous",
        description="continuous (the default): sentences join and leave running batches "
        "between decoding steps (one running batch per stream and beam size; "
        "NMT_MAX_BATCH_SIZE sentences each, within NMT_MAX_KV_TOKENS), each answered the step "
        "it finishes; static: a batch closes (NMT_MAX_BATCH_SIZE, NMT_MAX_BATCH_TOKENS, "
        "NMT_MAX_WAIT_MS) and runs to its longest sentence. Measured in docs/benchmarks.md.",
    )
    max_kv_tokens: int = Field(
        default=65536,
        ge=1,
        description="Continuous scheduler: KV-cache positions per language pair that running "
        "sentences may reserve (rows x longest output budget + source positions; one "
        "position is 2 x layers x d_model floats, 6 KiB for the shipped models). A "
        "sentence waits for room; one alone always runs.",
    )
    admit_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Continuous scheduler: a busy running batch takes waiting sentences "
        "once this share of its rows is free (or NMT_ADMIT_STEPS passed); 1: once it has "
        "no sentence left. Lower admits sooner (a newcomer waits less); higher joins less "
        "often (more sentences/s on a CPU, where a row's step costs the same whatever the "
        "batch: 1 served 1.11-1.21x of 0.5 at 64 clients).",
    )
    admit_steps: int = Field(
        default=32,
        ge=0,
        description="Continuous scheduler: ... or once its engine thread has taken this "
        "many decoding steps with room while sentences waited.",
    )
    tokenize: Literal["engine", "loop"] = Field(
        default="engine",
        description="Where a request's sentences are tokenized and checked against the "
        "model's length limit. engine: on the pair's engine thread, all waiting requests in "
        "one call, once; loop: each request on the event loop, and again by the engine (the "
        "path before, kept for A/B runs).",
    )
    json_response: Literal["orjson", "fastapi"] = Field(
        default="orjson",
        description="What renders the JSON routes' bodies (the same bodies either way). "
        "orjson: orjson, as FastAPI's default response class; fastapi: FastAPI's own "
        "(pydantic-core for routes with a response model). Kept for A/B runs.",
    )
    max_queue_size: int = Field(
        default=1024,
        ge=1,
        description="Most sentences waiting per language pair; beyond it requests get 429 "
        "with Retry-After. A request larger than the whole queue is admitted only into an "
        "empty queue.",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Deadline of a request, queueing included; past it: 504."
    )
    max_chars: int = Field(default=5000, ge=1, description="Most characters in one text.")
    max_texts: int = Field(default=64, ge=1, description="Most texts in one request.")
    # ----- HTML, files (LibreTranslate's /translate_file) -----
    max_html_depth: int = Field(
        default=128, ge=1, description="Deepest element nesting accepted in HTML input."
    )
    max_file_bytes: int = Field(
        default=512 * 1024,
        ge=1,
        description="Largest file /translate_file takes (.txt or .html, UTF-8); beyond: 413.",
    )
    max_file_chars: int = Field(
        default=20_000,
        ge=1,
        description="Most characters in one file to translate (markup included); its text is "
        "translated in pieces of at most max_chars. A `q` in format html is held to max_chars.",
    )
    files_dir: Path | None = Field(
        default=None,
        description="Directory of the translated files waiting for download; nothing else is "
        "written there. Default: nmt-files in the system's temporary directory.",
    )
    files_ttl_s: float = Field(
        default=3600, gt=0, description="How long a translated file can be downloaded."
    )
    max_files: int = Field(
        default=100, ge=1, description="Most translated files kept; the oldest go first."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Comma-separated API keys. When set, translation and model routes need "
        "`Authorization: Bearer <key>`, `X-API-Key: <key>` or LibreTranslate's `api_key` "
        "field; health, metrics, /languages and the docs stay open.",
    )
    host: str = Field(default="0.0.0.0", description="Address `python -m service` listens on.")
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port `python -m service` listens on."
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1, description="Largest request body accepted; beyond it: 413."
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="Intra-op threads of the engines (torch and ONNX Runtime); 0 leaves the "
        "libraries' default (all cores).",
    )
    streams: int = Field(
        default=0,
        ge=0,
        description="Batches the ONNX Runtime engine decodes at once, each in its own thread "
        "with threads / streams intra-op threads; 0: one per thread on the CPU (measured "
        "faster than one batch on every thread), one on CUDA.",
    )
    workers: int = Field(
        default=1,
        ge=0,
        description="Server processes sharing the port, each with its own event loop, engines "
        "and interpreter lock; 0: one per CPU. With more than one, NMT_THREADS (or the CPUs, "
        "when 0) is divided among them, /metrics sums every process, readiness waits for "
        "all, and rate limits need a shared NMT_RATE_LIMIT_STORAGE (docs/deploy.md).",
    )
    load_workers: int = Field(
        default=0,
        ge=0,
        description="Language pairs loaded at once at start-up; 0: one per CPU, at most the "
        "number of pairs. Exports of graphs missing from the cache take turns whatever this is.",
    )
    default_beam_size: int = Field(
        default=4, ge=1, description="Beam size when a request names none (1 is greedy search)."
    )
    max_beam_size: int = Field(
        default=8,
        ge=1,
        description="Largest beam size a request may ask for; alternatives must be below it.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the service and uvicorn."
    )
    # ----- operations: shutdown, API keys from a file, rate limits (docs/deploy.md)
    shutdown_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="On SIGTERM: seconds the service goes on serving, with /health/ready at "
        "503 and `Connection: close` on every response, so that load balancers stop sending "
        "before it stops accepting; then it drains and exits. A second SIGTERM (or SIGINT) "
        "stops at once, still draining.",
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="File of API keys, one a line (`#` comments), added to NMT_API_KEYS: "
        "e.g. a mounted Kubernetes Secret. Read at start; unreadable: an error at start.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Requests per client in the `limits` notation, e.g. `120/minute` or "
        "`120/minute;2000/hour`; unset: no limit. A client is its API key, or its address "
        "when the service has no keys. Over it: 429 with Retry-After and X-RateLimit-*.",
    )
    char_rate_limit: str | None = Field(
        default=None,
        description="Characters to translate per client, e.g. `50000/minute`; unset: no limit.",
    )
    rate_limits_file: Path | None = Field(
        default=None,
        description='JSON of per-key overrides: `{"<key or sha256:label>": {"rate_limit": '
        '"600/minute", "char_rate_limit": null}}` (null lifts a limit).',
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where the counters live: `memory://` (per process) or "
        "`redis://host:port` so that replicas share them. Unreachable at start: an error; "
        "failing while serving: requests are let through (fail open).",
    )

    @model_validator(mode="after")
    def _beam_sizes(self) -> Settings:
        if self.default_beam_size > self.max_beam_size:
            raise ValueError(
                f"default_beam_size {self.default_beam_size} is over "
                f"max_beam_size {self.max_beam_size}"
            )
        return self

    @model_validator(mode="after")
    def _shared_limits(self) -> Settings:
        limited = self.rate_limit or self.char_rate_limit or self.rate_limits_file
        if self.workers != 1 and limited and self.rate_limit_storage.startswith("memory://"):
            raise ValueError(
                "rate limits with workers other than 1 need a shared rate_limit_storage "
                "(redis://host:port): memory:// would count each process apart"
            )
        return self

    @field_validator("rate_limit", "char_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str | None) -> str | None:
        from limits import parse_many

        if value is not None and value.strip():
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate limit like 120/minute") from None
        return value

    @model_validator(mode="after")
    def _keys_file(self) -> Settings:
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text().splitlines()
            except OSError as exc:
                raise ValueError(
                    f"api_keys_file: cannot read {self.api_keys_file}: {exc}"
                ) from None
            keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            self.api_keys = [*self.api_keys, *(k for k in keys if k not in self.api_keys)]
        return self

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def resolved_files_dir(self) -> Path:
        """Where translated files wait: files_dir, or nmt-files in the temporary directory."""
        if self.files_dir is not None:
            return self.files_dir
        import tempfile

        return Path(tempfile.gettempdir()) / "nmt-files"

    def resolved_device(self) -> str:
        """The device `auto` stands for on this machine."""
        if self.device != "auto":
            return self.device
        return "cuda" if _cuda_usable(self.backend) else "cpu"

    def resolved_precision(self, device: str) -> str:
        """The precision `auto` stands for on that device."""
        if self.precision != "auto":
            return self.precision
        return AUTO_PRECISION


def _cuda_usable(backend: str) -> bool:
    """torch decides for the torch backend; ONNX Runtime's providers for the others (the GPU
    image pairs onnxruntime-gpu with the CPU build of torch, whose fallback runs on the CPU)."""
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def settings_table() -> str:
    """The configuration as a Markdown table (variable, default, description) for the docs."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        shown = "" if shown is None else shown
        rows.append(f"| `NMT_{name.upper()}` | `{shown}` | {info.description} |")
    return "\n".join(rows)
