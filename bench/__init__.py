"""Benchmarks: each table with the command that produced it (results under bench/results).

Reporting benchmarks, each `python -m bench.<name> --help`:
- `engines`: every engine (torch with and without the cache, ONNX Runtime, CTranslate2) on
  the same sentences, one row per process (`engine_job`), the report in `engine_report`;
- `service`: the running service under N clients, batching on and off;
- `continuous`: the continuous scheduler against the static one;
- `startup`: start-up time and memory with every pair loaded;
- `detect_accuracy`: language detection, lingua against langdetect.

Checks and tools:
- `composition`: sentences joining a running batch decode as offline (a correctness check);
- `ab`: an A/B of whole translations in one process, two graph exports or two searches.

Shared pieces: `toolkit` (the test split, clocks and steal, memory, the machine, the A/B
loop, the service launcher and its raw-socket client); `ctranslate2_model` (our checkpoint
as a CTranslate2 model) and `torch_nocache` (the KV-less baseline engine), for `engines`.
What one-off scripts measured before they were deleted: docs/decisions.md.
"""
