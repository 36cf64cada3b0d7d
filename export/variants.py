"""Derived graph variants: int8 dynamic quantization (CPU) and float16 (GPU), from float32."""

from __future__ import annotations

from pathlib import Path

import onnx

from export.contract import DECODER_FILE, ENCODER_FILE, TOP_K_OUTPUTS


def quantize_int8(fp32_dir: Path, out_dir: Path) -> None:
    """int8 weights, activations quantized on the fly, for every MatMul with a constant weight."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (ENCODER_FILE, DECODER_FILE):
        # Shape inference and constant folding first, as the quantizer asks: it can then
        # see every weight MatMul with its shapes. auto_merge: a reshape to -1 rows makes a
        # new symbolic size, which the inference may then equate with the batch.
        prepared = out_dir / f"prepared-{name}"
        quant_pre_process(fp32_dir / name, prepared, auto_merge=True)
        quantize_dynamic(
            prepared,
            out_dir / name,
            # MatMul only: attention's activation x activation products (Q K^T, weights V)
            # stay in float, they carry the softmax's precision and have no weight to save.
            op_types_to_quantize=["MatMul"],
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
        prepared.unlink()


def convert_fp16(fp32_dir: Path, out_dir: Path) -> None:
    """float16 weights, activations and cache; the log-probabilities stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (ENCODER_FILE, DECODER_FILE):
        model = onnx.load(str(fp32_dir / name))
        converted = convert_float_to_float16(
            model,
            # The search ranks hypotheses on float32 log-probabilities, as on every backend;
            # LogSoftmax and the top-k (the `top_k/` nodes) run in float32 on logits cast up
            # from the float16 projection.
            keep_io_types=["log_probs", TOP_K_OUTPUTS[0]] if name == DECODER_FILE else False,
            op_block_list=["LogSoftmax"],
            node_block_list=[n.name for n in model.graph.node if n.name.startswith("top_k/")],
        )
        onnx.save(converted, str(out_dir / name))
