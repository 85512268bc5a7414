"""The benchmarked systems. Each one is loaded in its own worker process (see worker.py).

Every system gets the same final strings (prompts already prepended by the harness) and is asked
for L2-normalized 768-d float32 embeddings with no prompt of its own, at `threads` threads.
A system is three steps, timed separately by the worker: `import_libs()` (the library imports),
`construct()` (model construction), then `encode(texts, batch_size)` calls.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .cli import SYSTEM_NAMES

ONNX_FP32 = "onnx/model.onnx"
ONNX_INT8 = "onnx/model_qint8_avx512_vnni.onnx"
OV_XML = "openvino/openvino_model.xml"
# sentence-transformers' export_static_quantized_openvino_model names its output with file_suffix "qint8_quantized"
OV_QINT8_XML = "openvino/openvino_model_qint8_quantized.xml"
OV_WC8_XML = "openvino/openvino_model_wc8.xml"  # nncf.compress_weights of the float32 IR (harness/prepare.py)
WC8_DQ_GROUP_SIZE = 32  # the CPU plugin's dynamic activation quantization group for st-openvino-wc8


def feed_position_ids(am) -> bool:
    """Make an optimum-intel OVModelForFeatureExtraction feed its exported position_ids input.

    optimum-intel exports gemma3_text feature extraction with a position_ids input that
    OVModelForFeatureExtraction.forward never feeds (all tokens would sit at one rotary position:
    cosine ~0.98 to the reference). Feed 0..T-1, as transformers does. Used by the OpenVINO workers
    and by the static int8 export (whose calibration runs the same forward). True when patched.
    """
    if "position_ids" not in getattr(am, "input_names", {}):
        return False
    orig = am._inference

    def _inference(inputs, _orig=orig):
        if "position_ids" not in inputs:
            ids = inputs["input_ids"]
            b, t = ids.shape
            inputs["position_ids"] = np.ascontiguousarray(np.broadcast_to(np.arange(t, dtype=np.int64), (b, t)))
        return _orig(inputs)

    am._inference = _inference
    return True


class System:
    name = ""
    family = ""  # "competitor" or "embgemma"
    description = ""
    needs: tuple[str, ...] = ()  # which prepared artifacts it uses: "st", "onnx", "openvino", "gguf"
    variants: tuple[dict, ...] = ({},)  # construction options tried during calibration
    extra_batch_sizes: tuple[int, ...] = ()  # calibration candidates beyond --batch-sizes
    precision = "fp32"  # weights: fp32, bf16, int8, q8_0, q4_0 (the report's "fastest float32 competitor" etc.)

    def __init__(self, paths: dict, threads: int, options: dict | None = None):
        self.paths = paths
        self.threads = threads
        self.options = dict(options or {})
        self.notes: list[str] = []

    def import_libs(self) -> None:
        raise NotImplementedError

    def construct(self) -> None:
        raise NotImplementedError

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def info(self) -> dict:
        return {"options": self.options, "notes": self.notes}


# ------------------------------------------------------------------------------------------
# sentence-transformers family


class _ST(System):
    family = "competitor"
    backend = "torch"

    def import_libs(self) -> None:
        import torch  # noqa: F401
        import sentence_transformers  # noqa: F401

        torch.set_num_threads(self.threads)
        torch.set_num_interop_threads(1)

    def _load(self, folder: str, **kw):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(folder, device="cpu", **kw)

    def encode(self, texts, batch_size):
        return self.model.encode(texts, prompt="", batch_size=batch_size, show_progress_bar=False,
                                 convert_to_numpy=True).astype(np.float32, copy=False)

    def info(self) -> dict:
        d = super().info()
        d["max_seq_length"] = self.model.max_seq_length
        return d


class STTorch(_ST):
    name = "st-torch-fp32"
    description = "sentence-transformers, PyTorch CPU, float32"
    needs = ("st",)

    def construct(self):
        self.model = self._load(self.paths["st"])
        self.model.float()

    def info(self):
        import torch

        d = super().info()
        d.update(torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads(),
                 torch_config=torch.__config__.parallel_info().splitlines()[:6])
        return d


class _STOnnx(_ST):
    backend = "onnx"
    needs = ("onnx",)
    file_name = ONNX_FP32

    def import_libs(self):
        super().import_libs()
        import onnxruntime  # noqa: F401
        import optimum.onnxruntime  # noqa: F401

    def construct(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.model = self._load(self.paths["onnx"], backend="onnx", model_kwargs={
            "file_name": self.file_name, "provider": "CPUExecutionProvider", "session_options": so})

    def info(self):
        d = super().info()
        sess = getattr(self.model[0].auto_model, "model", None)
        if sess is not None:
            so = sess.get_session_options()
            d.update(ort_intra_op_threads=so.intra_op_num_threads, ort_providers=sess.get_providers(),
                     onnx_file=self.file_name)
        return d


class STOnnxFP32(_STOnnx):
    name = "st-onnx-fp32"
    description = "sentence-transformers, ONNX Runtime (optimum export), float32"


class STOnnxInt8(_STOnnx):
    name = "st-onnx-int8"
    description = "sentence-transformers, ONNX Runtime, dynamic int8 (export_dynamic_quantized_onnx_model, avx512_vnni config)"
    file_name = ONNX_INT8
    precision = "int8"


class STOpenVINO(_ST):
    name = "st-openvino-fp32"
    description = ("sentence-transformers, OpenVINO (optimum-intel export), float32 IR run in float32 "
                   "(INFERENCE_PRECISION_HINT=f32)")
    needs = ("openvino",)
    backend = "openvino"
    precision_hint: str | None = "f32"  # None: OpenVINO's default (bf16 on CPUs with AVX512_BF16 / AMX)
    folder_key = "openvino"  # which prepared folder (paths[...]) and IR file it loads
    file_name = OV_XML
    ov_extra: dict = {}  # further CPU plugin properties
    # compiled properties recorded in info()
    reported_props = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
                      "EXECUTION_MODE_HINT")

    def import_libs(self):
        super().import_libs()
        import openvino  # noqa: F401
        import optimum.intel.openvino  # noqa: F401

    def construct(self):
        ov_config = {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                     "CACHE_DIR": ""}
        if self.precision_hint:
            ov_config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        ov_config.update(self.ov_extra)
        self.ov_config = ov_config
        self.model = self._load(self.paths[self.folder_key], backend="openvino",
                                model_kwargs={"file_name": self.file_name, "ov_config": ov_config})
        am = self.model[0].auto_model
        am.compile()
        if feed_position_ids(am):
            self.notes.append("position_ids fed by the harness (optimum-intel 1.27 OVModelForFeatureExtraction "
                              "does not pass the exported position_ids input)")

    def compiled_model(self):
        am = self.model[0].auto_model
        req = getattr(am, "request", None)
        if req is None:
            return None
        return req.get_compiled_model() if hasattr(req, "get_compiled_model") else req

    def info(self):
        d = super().info()
        cm = self.compiled_model()
        props = {}
        for p in self.reported_props:
            try:
                props[p] = str(cm.get_property(p))
            except Exception as e:  # noqa: BLE001
                props[p] = f"? ({type(e).__name__})"
        d["openvino_compiled"] = props
        d["openvino_file"] = self.file_name
        d["ov_config"] = {k: str(v) for k, v in self.ov_config.items()}
        hint = props.get("INFERENCE_PRECISION_HINT", "")
        # what the CPU plugin actually computes in: the report's "float32 competitor" must be float32
        d["precision"] = "bf16" if "bf16" in hint or "bfloat16" in hint else ("fp32" if "f32" in hint or "float32" in hint
                                                                             else self.precision)
        try:
            import openvino as ov

            d["openvino_cpu_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # noqa: BLE001
            pass
        return d


class STOpenVINODefault(STOpenVINO):
    name = "st-openvino-default"
    description = ("sentence-transformers, OpenVINO, the same IR at the CPU plugin's default inference precision "
                   "(bf16 where the CPU has AVX512_BF16 / AMX, else f32; the compiled precision is recorded)")
    precision_hint = None


class _STOpenVINOInt8(STOpenVINO):
    """An int8 OpenVINO IR at the CPU plugin's default inference precision (what a user gets).

    Its precision class stays int8 (the report's 8-bit competitor); the plugin's compute precision
    for the ops left in floating point is recorded as compute_precision."""
    precision = "int8"
    precision_hint = None

    def info(self):
        d = super().info()
        d["compute_precision"] = d.get("precision")
        d["precision"] = self.precision
        cm = self.compiled_model()
        try:  # what the compiled graph really runs: int8 / u8 convolutions and matmuls
            rt = cm.get_runtime_model()
            kinds: dict = {}
            def _get(rt_info, key, default):
                try:
                    v = rt_info[key]
                except Exception:  # noqa: BLE001
                    return default
                return v.astype(str) if hasattr(v, "astype") else str(v)

            for op in rt.get_ordered_ops():
                info = op.get_rt_info()
                lt = _get(info, "layerType", op.get_type_name())
                prec = _get(info, "runtimePrecision", "?")  # for weight-compressed FCs: the weights' type
                prim = _get(info, "primitiveType", "?")  # the kernel the plugin picked
                if lt in ("FullyConnected", "MatMul", "Convolution", "Gather", "ScaledDotProductAttention"):
                    k = f"{lt}:{prec}:{prim}"
                    kinds[k] = kinds.get(k, 0) + 1
            d["openvino_runtime_ops"] = kinds
        except Exception as e:  # noqa: BLE001
            d["openvino_runtime_ops"] = f"? ({type(e).__name__}: {e})"
        return d


class STOpenVINOQInt8(_STOpenVINOInt8):
    name = "st-openvino-qint8"
    description = ("sentence-transformers, OpenVINO static int8 (export_static_quantized_openvino_model: "
                   "optimum-intel OVQuantizer + NNCF, default OVQuantizationConfig with SmoothQuant), calibrated on "
                   "harness-generated corpus-like texts")
    needs = ("openvino_qint8",)
    folder_key = "openvino_qint8"
    file_name = OV_QINT8_XML


class STOpenVINOWC8(_STOpenVINOInt8):
    name = "st-openvino-wc8"
    description = ("sentence-transformers, OpenVINO float32 IR with int8 weights (nncf.compress_weights, NNCF's "
                   f"default int8 mode), run with the CPU plugin's dynamic activation quantization "
                   f"(DYNAMIC_QUANTIZATION_GROUP_SIZE={WC8_DQ_GROUP_SIZE})")
    needs = ("openvino_wc8",)
    folder_key = "openvino_wc8"
    file_name = OV_WC8_XML
    ov_extra = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": WC8_DQ_GROUP_SIZE}
    reported_props = STOpenVINO.reported_props + ("DYNAMIC_QUANTIZATION_GROUP_SIZE", "KV_CACHE_PRECISION",
                                                  "KEY_CACHE_PRECISION", "VALUE_CACHE_PRECISION")


# ------------------------------------------------------------------------------------------
# fastembed (Qdrant), on the harness's own ONNX export


FASTEMBED_MODEL_NAME = "embgemma-bench/embeddinggemma-300m-local"


class FastEmbed(System):
    name = "fastembed"
    family = "competitor"
    description = ("fastembed TextEmbedding, custom model (add_custom_model) on the harness's own ONNX export "
                   "(specific_model_path; not onnx-community's files)")
    needs = ("onnx_st",)
    precision = "fp32"

    def import_libs(self):
        import fastembed  # noqa: F401
        import onnxruntime  # noqa: F401

    def construct(self):
        import json

        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        folder = Path(self.paths["onnx_st"])
        exp = json.loads((folder / "export.json").read_text())
        self.export = exp
        self.model_file = exp["fastembed_model_file"]
        output_name = exp.get("fastembed_output_name")  # "sentence_embedding" when the graph has the Dense head
        pooling = PoolingType.DISABLED if output_name == "sentence_embedding" else PoolingType.MEAN
        self.pipeline = {"model_file": self.model_file, "output_name": output_name, "pooling": pooling.value,
                         "normalization": True, "additional_files": exp.get("fastembed_additional_files", [])}
        TextEmbedding.add_custom_model(
            model=FASTEMBED_MODEL_NAME, pooling=pooling, normalization=True,
            sources=ModelSource(hf=FASTEMBED_MODEL_NAME), dim=768, model_file=self.model_file,
            description="EmbeddingGemma-300m, the benchmark harness's own ONNX export", license="gemma",
            additional_files=exp.get("fastembed_additional_files", []), output_name=output_name)
        self.model = TextEmbedding(model_name=FASTEMBED_MODEL_NAME, specific_model_path=str(folder),
                                   threads=self.threads, providers=["CPUExecutionProvider"], local_files_only=True,
                                   cache_dir=str(folder / ".fastembed-cache"))
        self.notes.append(f"runs {exp.get('fastembed_export_note', self.model_file)}")
        if exp.get("fastembed_fidelity_note"):
            self.notes.append(exp["fastembed_fidelity_note"])

    def encode(self, texts, batch_size):
        return np.asarray(list(self.model.embed(texts, batch_size=batch_size)), dtype=np.float32)

    def info(self):
        d = super().info()
        d["fastembed_pipeline"] = self.pipeline
        inner = getattr(self.model, "model", None)
        sess = getattr(inner, "model", None)
        if sess is not None:
            so = sess.get_session_options()
            d.update(ort_intra_op_threads=so.intra_op_num_threads, ort_inter_op_threads=so.inter_op_num_threads,
                     ort_execution_mode=str(so.execution_mode), ort_providers=sess.get_providers(),
                     onnx_outputs=[o.name for o in sess.get_outputs()], onnx_inputs=[i.name for i in sess.get_inputs()])
        d["export"] = {k: v for k, v in self.export.items() if k != "files"}
        return d


# ------------------------------------------------------------------------------------------
# llama.cpp through llama-cpp-python


class _Llama(System):
    family = "competitor"
    needs = ("gguf",)
    outtype = "f32"
    variants = ({"flash_attn": False}, {"flash_attn": True})
    # llama.cpp decodes all texts of one embed() call in one ubatch, attending over all their
    # tokens (masked), so fewer texts per call can be faster: try those too
    extra_batch_sizes = (1, 2, 4)
    n_ctx = 8192  # every sequence (<= 2048 tokens) sits in one ubatch

    def import_libs(self):
        import llama_cpp  # noqa: F401
        from tokenizers import Tokenizer  # noqa: F401

    def construct(self):
        import llama_cpp
        import llama_cpp.llama_cpp as llama_c

        if not self.options.get("extra_bufts", True):
            # llama.cpp's extra buffer types (AMX on CPUs that have it, CPU_REPACK) off: the
            # equivalent of llama.cpp's --no-repack. On AMX CPUs the AMX buffer type's Q8_0 matmul
            # crashes (SIGSEGV) in this llama.cpp build; this variant is the fallback.
            default_params = llama_c.llama_model_default_params

            def _params(_d=default_params):
                p = _d()
                p.use_extra_bufts = False
                return p

            llama_c.llama_model_default_params = _params
            self.notes.append("use_extra_bufts=False (no AMX / repacked weights)")
        path = str(Path(self.paths["gguf"]) / f"model-{self.outtype}.gguf")
        self.llm = llama_cpp.Llama(
            model_path=path, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=self.n_ctx, n_batch=self.n_ctx, n_ubatch=self.n_ctx, n_threads=self.threads,
            n_threads_batch=self.threads, flash_attn=bool(self.options.get("flash_attn", False)),
            verbose=False)
        self.tokenizer_source = "llama.cpp"

    def check_tokenizer(self, texts: list[str], tokenizer_json: str) -> dict:
        """Compare llama.cpp's own tokenization with the real tokenizer on `texts`.

        On any disagreement llama.cpp is fed the real tokenizer's ids (its own tokenizer is
        bypassed), so that every system embeds the same token sequences.
        """
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(tokenizer_json)
        bad = 0
        for s in texts:
            if self.llm.tokenize(s.encode("utf-8")) != hf.encode(s).ids:
                bad += 1
        if bad:
            self.llm.tokenize = lambda text, add_bos=True, special=False: hf.encode(text.decode("utf-8")).ids
            self.tokenizer_source = "real tokenizer ids (llama.cpp's own disagreed)"
            self.notes.append(f"llama.cpp tokenizer disagreed on {bad}/{len(texts)} texts: fed the real tokenizer's ids")
        return {"texts": len(texts), "disagree": bad}

    def encode(self, texts, batch_size):
        out = []
        for i in range(0, len(texts), batch_size):
            out.extend(self.llm.embed(texts[i:i + batch_size], normalize=True))
        return np.asarray(out, dtype=np.float32)

    def info(self):
        import llama_cpp

        d = super().info()
        d.update(gguf=f"model-{self.outtype}.gguf", n_ctx=self.n_ctx, n_batch=self.llm.n_batch,
                 n_ubatch=self.llm.context_params.n_ubatch, n_seq_max=self.llm.context_params.n_seq_max,
                 n_threads=self.llm.context_params.n_threads, n_threads_batch=self.llm.context_params.n_threads_batch,
                 pooling="mean", tokenizer=self.tokenizer_source,
                 system_info=llama_cpp.llama_print_system_info().decode(errors="replace"))
        return d


class LlamaF32(_Llama):
    name = "llamacpp-f32"
    description = "llama.cpp (llama-cpp-python), GGUF f32, mean pooling + Dense head in the graph"
    outtype = "f32"


class LlamaBF16(_Llama):
    name = "llamacpp-bf16"
    description = "llama.cpp (llama-cpp-python), GGUF bf16"
    outtype = "bf16"
    precision = "bf16"


class LlamaQ8(_Llama):
    name = "llamacpp-q8_0"
    description = "llama.cpp (llama-cpp-python), GGUF q8_0"
    outtype = "q8_0"
    precision = "q8_0"
    # quantized weights go to llama.cpp's extra buffer types (AMX / repack) by default; where that
    # crashes (AMX Q8_0 here) the variant without them still measures llama.cpp
    variants = ({"flash_attn": False}, {"flash_attn": True}, {"flash_attn": True, "extra_bufts": False})


# ------------------------------------------------------------------------------------------
# embgemma


class _EmbGemma(System):
    family = "embgemma"
    needs = ("st",)
    dtype = "float32"

    def import_libs(self):
        import embgemma  # noqa: F401

    def construct(self):
        from embgemma import EmbeddingGemma

        self.model = EmbeddingGemma(self.paths["st"], threads=self.threads, dtype=self.dtype)

    def encode(self, texts, batch_size):
        return np.asarray(self.model.encode(texts, prompt="", batch_size=batch_size, show_progress_bar=False),
                          dtype=np.float32)

    def info(self):
        import embgemma

        d = super().info()
        d.update(repr=repr(self.model), build_info=embgemma.build_info(), threads=self.model.threads)
        return d


class EmbGemmaFP32(_EmbGemma):
    name = "embgemma-fp32"
    description = "embgemma, float32 weights"
    dtype = "float32"


class EmbGemmaBF16(_EmbGemma):
    name = "embgemma-bf16"
    description = "embgemma, bfloat16 weights"
    dtype = "bfloat16"
    precision = "bf16"


class EmbGemmaInt8(_EmbGemma):
    name = "embgemma-int8"
    description = "embgemma, int8 weights"
    dtype = "int8"
    precision = "int8"


class EmbGemmaInt16(_EmbGemma):
    name = "embgemma-int16"
    description = "embgemma, int16 weights and activations on a 12-bit grid"
    dtype = "int16"
    precision = "int16"


class EmbGemmaQ8GGUF(_EmbGemma):
    name = "embgemma-q8_0"
    description = "embgemma on llama.cpp's Q8_0 GGUF (the file llamacpp-q8_0 runs), ggml Q8_0 weights"
    needs = ("st", "gguf")
    dtype = "q8_0"
    precision = "q8_0"

    def construct(self):
        from embgemma import EmbeddingGemma

        # the converted file carries the Dense tensors (checked at conversion), and the harness puts the
        # model's tokenizer.json beside it, so it loads on its own (dense_from would be refused)
        path = Path(self.paths["gguf"]) / "model-q8_0.gguf"
        self.model = EmbeddingGemma(str(path), threads=self.threads, dtype=self.dtype)
        self.notes.append(f"loaded {path.name} (llama.cpp's convert_hf_to_gguf.py --outtype q8_0), weights "
                          f"{self.model.dtype}, tokenizer: {self.model.tokenizer_source}")


class EmbGemmaQ4(_EmbGemma):
    name = "embgemma-q4_0"
    description = "embgemma, ggml Q4_0 weights quantized at load from the float32 folder (bit-identical to ggml's quantizer)"
    dtype = "q4_0"
    precision = "q4_0"


ALL = [STTorch, STOnnxFP32, STOnnxInt8, STOpenVINO, STOpenVINODefault, STOpenVINOQInt8, STOpenVINOWC8,
       FastEmbed, LlamaF32, LlamaBF16, LlamaQ8,
       EmbGemmaFP32, EmbGemmaBF16, EmbGemmaInt16, EmbGemmaInt8, EmbGemmaQ8GGUF, EmbGemmaQ4]
BY_NAME = {c.name: c for c in ALL}
REFERENCE = "st-torch-fp32"
assert [c.name for c in ALL] == SYSTEM_NAMES, "harness/cli.py SYSTEM_NAMES and systems.ALL disagree"


def thread_env(threads: int) -> dict:
    """Environment for a worker: every library's thread pools capped at `threads`."""
    t = str(threads)
    return {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "RAYON_NUM_THREADS": t,
            "VECLIB_MAXIMUM_THREADS": t, "NUMEXPR_NUM_THREADS": t, "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true",
            "PYTHONWARNINGS": "ignore", "TRANSFORMERS_VERBOSITY": "error",
            "OV_CACHE_DIR": ""}


def proc_status() -> dict:
    """VmRSS and VmHWM (peak) of this process, in MB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) / 1024.0
    except OSError:
        pass
    return {"rss_mb": round(out.get("VmRSS", float("nan")), 1), "peak_rss_mb": round(out.get("VmHWM", float("nan")), 1)}


def env_threads_note() -> str:
    return ", ".join(f"{k}={os.environ.get(k)}" for k in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS"))
