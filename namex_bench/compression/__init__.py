"""One-shot compression of pretrained MoE LLMs: from N experts per sparse block to M.

A sibling of merging (``namex_bench/methods``), not a mode of it: merging methods combine
experts inside a model that is trained or evaluated with them; compression methods rewrite a
pretrained ``transformers`` MoE LLM into the same architecture with fewer experts, once,
from calibration statistics.

    blocks       the sparse MoE blocks of a transformers model, read and rewritten (every layout)
    calibration  the calibration pass: routing frequencies, router-logit Gram, REAP saliency,
                 mean expert outputs — bounded memory
    base         the method contract (LayerInputs → LayerPlan), pruned/merged plans
    registry     register_compressor, entry points ``namex_bench.compressors``, plugins
    methods/     one file per method: frequency_prune, reap_prune, msmoe_merge, hcsmoe_merge, nash_merge
    clustering   agglomerative clustering (HC-SMoE), assignment to dominant experts (M-SMoE)
    alignment    permutation alignment of hidden neurons (M-SMoE)
    compress     per-layer budgets, DeepSeek's expert groups, rewriting the model and its config
"""

from .base import CompressionMethod, LayerInputs, LayerPlan, merged, pruned
from .blocks import SparseBlock, find_sparse_blocks
from .calibration import CalibrationSettings, LayerCalibration, calibrate
from .compress import CompressionResult, compress_moe_llm, layer_budgets, save_compressed
from .registry import available_compressors, get_compressor, register_compressor

__all__ = [
    "CalibrationSettings",
    "CompressionMethod",
    "CompressionResult",
    "LayerCalibration",
    "LayerInputs",
    "LayerPlan",
    "SparseBlock",
    "available_compressors",
    "calibrate",
    "compress_moe_llm",
    "find_sparse_blocks",
    "get_compressor",
    "layer_budgets",
    "merged",
    "pruned",
    "register_compressor",
    "save_compressed",
]
