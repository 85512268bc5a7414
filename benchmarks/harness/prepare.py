"""One-time model preparation: the random-weight EmbeddingGemma-300m (when no real folder is used)
and the competitor exports of the benchmarked folder.

Each step runs in its own process (``python -m harness.prepare STEP --args JSON``) so that the
memory of an export is returned to the system before the benchmark starts. Outputs are written to
a temporary folder and renamed into place only when complete, so an interrupted export is redone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCH_NOTE = "google/embeddinggemma-300m shapes, full 262,144-token vocabulary, random weights"


def _log(msg: str) -> None:
    print(f"[prepare] {msg}", file=sys.stderr, flush=True)


def _fresh(path: Path) -> Path:
    tmp = path.parent / (path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


# --------------------------------------------------------------------------------------------
# the reference sentence-transformers folder


def finish_folder(folder: Path, tokenizer_dir: Path, sliding_window: int) -> None:
    """Make a saved folder carry the real tokenizer files and the published sliding_window.

    transformers < 5 halves `sliding_window` in Gemma3TextConfig for bidirectional models
    (512 -> 257) and writes the halved value back on save, so every load/save round trip
    shrinks it again (257 -> 129 ...). The published EmbeddingGemma config says 512; every
    consumer (transformers 4.57 and 5.x, llama.cpp's converter, embgemma) reads 512 correctly.
    """
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(Path(tokenizer_dir) / name, Path(folder) / name)
    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("sliding_window") != sliding_window:
        cfg["sliding_window"] = sliding_window
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def build_model(out: str, tokenizer_dir: str, seed: int) -> None:
    out_p = Path(out)
    sys.path.insert(0, str(REPO / "tests"))
    import refmodel  # the project's reference-model builder
    from tokenizers import Tokenizer

    tmp = _fresh(out_p)
    tok_dir = Path(tokenizer_dir)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    arch = dict(refmodel.FULL, vocab_size=262144)
    t0 = time.perf_counter()
    st_dir = tmp / "st"
    refmodel.build(st_dir, arch, seed=seed, tokenizer=tok)
    # the Transformer module sits at the folder root: put the real tokenizer files there
    finish_folder(st_dir, tok_dir, arch["sliding_window"])
    hf_dir = st_dir.parent / (st_dir.name + "_hf")
    shutil.rmtree(hf_dir, ignore_errors=True)
    # sanity: the saved folder tokenizes exactly like the real tokenizer
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(st_dir), device="cpu")
    probe = "title: none | text: Hello world, the quick brown fox."
    ids_st = st.tokenize([probe])["input_ids"][0].tolist()
    ids_real = tok.encode(probe).ids
    if ids_st != ids_real:
        raise SystemExit(f"tokenizer mismatch in the saved folder: {ids_st} vs {ids_real}")
    (tmp / "build.json").write_text(json.dumps({
        "arch": arch, "seed": seed, "tokenizer_dir": str(tok_dir), "note": ARCH_NOTE,
        "seconds": round(time.perf_counter() - t0, 1),
    }, indent=1))
    # move st/ into place as the final folder's content
    _commit(tmp, out_p)
    _log(f"model built in {time.perf_counter() - t0:.0f} s: {out_p / 'st'}")


# --------------------------------------------------------------------------------------------
# ONNX (fp32 + dynamic int8) through sentence-transformers / optimum


def _st_export(model: str, tmp: Path, backend: str, tokenizer_dir: str, sliding_window: int | None) -> None:
    """sentence-transformers' own export to `backend` (float32), saved into tmp with the source's config.

    `tokenizer_dir` holds the tokenizer files the source folder uses; `sliding_window` is the value
    of the source's config.json (None: leave the saved config alone)."""
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    st = SentenceTransformer(model, backend=backend, device="cpu", model_kwargs={"export": True})
    st.save_pretrained(str(tmp))
    if sliding_window is None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
    else:
        finish_folder(tmp, Path(tokenizer_dir), sliding_window)
    _log(f"{backend} float32 exported in {time.perf_counter() - t0:.0f} s")


def _write_export_json(tmp: Path, sub: str, **extra) -> None:
    files = sorted(p.relative_to(tmp).as_posix() for p in (tmp / sub).rglob("*") if p.is_file())
    (tmp / "export.json").write_text(json.dumps({"files": files, **extra}, indent=1))


def export_onnx(model: str, out: str, qconfig: str, tokenizer_dir: str, sliding_window: int | None) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.backend import export_dynamic_quantized_onnx_model

    out_p = Path(out)
    tmp = _fresh(out_p)
    _st_export(model, tmp, "onnx", tokenizer_dir, sliding_window)
    t1 = time.perf_counter()
    st = SentenceTransformer(str(tmp), backend="onnx", device="cpu", model_kwargs={"file_name": "onnx/model.onnx"})
    export_dynamic_quantized_onnx_model(st, qconfig, str(tmp))
    _log(f"onnx int8 ({qconfig}) exported in {time.perf_counter() - t1:.0f} s")
    _write_export_json(tmp, "onnx", quantization_config=qconfig)
    _commit(tmp, out_p)


# --------------------------------------------------------------------------------------------
# OpenVINO IR through sentence-transformers / optimum-intel


def export_openvino(model: str, out: str, tokenizer_dir: str, sliding_window: int | None) -> None:
    out_p = Path(out)
    tmp = _fresh(out_p)
    _st_export(model, tmp, "openvino", tokenizer_dir, sliding_window)
    _write_export_json(tmp, "openvino")
    _commit(tmp, out_p)


def _copy_without(src: Path, dst: Path, skip: set[str]) -> None:
    """Copy the sentence-transformers folder src into dst, leaving out the relative paths in skip."""
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if f.is_file() and rel not in skip and rel != "export.json" and not rel.startswith("."):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / rel)


def _ov_summary(xml: Path) -> dict:
    """What an IR holds: FakeQuantize nodes (static int8 activations) and weight constants by element type."""
    import openvino as ov

    m = ov.Core().read_model(str(xml))
    ops: dict = {}
    consts: dict = {}
    for op in m.get_ordered_ops():
        t = op.get_type_name()
        ops[t] = ops.get(t, 0) + 1
        if t == "Constant":
            et = op.get_output_element_type(0).get_type_name()
            n = 1
            for d in op.get_output_shape(0):
                n *= int(d)
            c = consts.setdefault(et, {"count": 0, "elements": 0})
            c["count"] += 1
            c["elements"] += n
    return {"FakeQuantize": ops.get("FakeQuantize", 0), "MatMul": ops.get("MatMul", 0),
            "Gather": ops.get("Gather", 0), "constants_by_type": consts,
            "bin_bytes": xml.with_suffix(".bin").stat().st_size}


def export_openvino_qint8(src: str, out: str, calib_json: str) -> None:
    """Static int8 (weights + activations) the way sentence-transformers documents it.

    `sentence_transformers.backend.export_static_quantized_openvino_model(model, None, folder)` runs
    unmodified: OVQuantizationConfig() defaults (8 bits, asymmetric activations, model_type
    "transformer", fast bias correction, SmoothQuant at NNCF's default alpha), OVQuantizer.quantize,
    its own tokenization (padding to max_length=384, truncation) and file naming
    (openvino/openvino_model_qint8_quantized.xml). Only its calibration source is replaced: the
    function loads nyu-mll/glue sst2 from the Hugging Face Hub with `datasets`, which this machine can
    neither reach nor install beside the pinned hub (every `datasets` release that accepts
    huggingface-hub 0.36 caps fsspec below the pinned 2026.9.0). It gets the harness-generated texts
    of `calib_json` instead, through OVQuantizer.get_calibration_dataset, in the form that function
    returns (the preprocessed rows); optimum-intel takes its default number of them (num_samples is
    unset, so 128).
    """
    import contextlib

    import sentence_transformers.backend.quantize as stq
    from optimum.intel.openvino import OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    from .systems import OV_QINT8_XML, OV_XML, feed_position_ids

    calib = json.loads(Path(calib_json).read_text())
    texts = calib["texts"]
    src_p, out_p = Path(src), Path(out)
    tmp = _fresh(out_p)
    _copy_without(src_p, tmp, {OV_XML, OV_XML[:-4] + ".bin"})
    t0 = time.perf_counter()
    st = SentenceTransformer(str(src_p), backend="openvino", device="cpu", model_kwargs={"file_name": OV_XML})
    patched = feed_position_ids(st[0].auto_model)
    seen: dict = {}

    def _calibration_dataset(self, dataset_name, num_samples=None, dataset_config_name=None, dataset_split="train",
                             preprocess_function=None, preprocess_batch=True, **kw):
        seen.update(dataset_name=dataset_name, dataset_config_name=dataset_config_name, dataset_split=dataset_split,
                    num_samples=num_samples)
        rows = texts if num_samples is None else texts[:num_samples]
        enc = preprocess_function({"sentence": rows})  # sentence-transformers' own preprocessing
        return [{k: enc[k][i] for k in enc.keys()} for i in range(len(rows))]

    stq.is_datasets_available = lambda: True
    stq.disable_datasets_caching = contextlib.nullcontext
    OVQuantizer.get_calibration_dataset = _calibration_dataset
    cfg = OVQuantizationConfig()
    stq.export_static_quantized_openvino_model(st, None, str(tmp))
    xml = tmp / OV_QINT8_XML
    if not xml.is_file():
        raise SystemExit(f"{xml} was not written")
    summary = _ov_summary(xml)
    if not summary["FakeQuantize"]:
        raise SystemExit(f"{xml.name} has no FakeQuantize node: not statically quantized")
    secs = round(time.perf_counter() - t0, 1)
    _log(f"openvino static int8 exported in {secs:.0f} s: {summary['FakeQuantize']} FakeQuantize nodes")
    _write_export_json(
        tmp, "openvino", method="sentence_transformers.backend.export_static_quantized_openvino_model(model, None, "
        "folder) -> optimum-intel OVQuantizer + nncf.quantize", quantization_config=cfg.to_dict(),
        effective_num_samples=min(len(texts), cfg.num_samples or 128),
        calibration={k: calib.get(k) for k in ("description", "n", "seed", "min", "max", "prompt", "key")},
        calibration_source_replaced=seen, position_ids_fed=patched, ir=summary, seconds=secs,
        tokenization="sentence-transformers: padding='max_length', max_length=384, truncation=True")
    _commit(tmp, out_p)


def export_openvino_wc8(src: str, out: str) -> None:
    """int8 weight compression of the float32 IR: nncf.compress_weights with NNCF's defaults."""
    import inspect

    import nncf
    import openvino as ov

    from .systems import OV_WC8_XML, OV_XML

    src_p, out_p = Path(src), Path(out)
    tmp = _fresh(out_p)
    _copy_without(src_p, tmp, {OV_XML, OV_XML[:-4] + ".bin"})
    t0 = time.perf_counter()
    model = ov.Core().read_model(str(src_p / OV_XML))
    mode = inspect.signature(nncf.compress_weights).parameters["mode"].default
    cm = nncf.compress_weights(model)  # NNCF's default: 8-bit, mode as recorded
    xml = tmp / OV_WC8_XML
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(cm, str(xml), compress_to_fp16=False)
    summary = _ov_summary(xml)
    secs = round(time.perf_counter() - t0, 1)
    _log(f"openvino int8 weight compression ({mode}) in {secs:.0f} s")
    _write_export_json(tmp, "openvino", method="nncf.compress_weights(model) with NNCF's defaults on the float32 IR",
                       mode=str(mode), ir=summary, seconds=secs)
    _commit(tmp, out_p)


# --------------------------------------------------------------------------------------------
# ONNX with the sentence-transformers head in the graph, for fastembed


def export_onnx_st(model: str, out: str, onnx_dir: str, tokenizer_dir: str, sliding_window: int | None) -> None:
    """An ONNX graph of the whole sentence-transformers pipeline, for fastembed.

    fastembed's custom-model path runs one ONNX file and pools its output itself (CLS / mean / last
    token), then normalizes; it has no place for EmbeddingGemma's two Dense layers after pooling.
    The harness's ONNX export (sentence-transformers backend="onnx", optimum) holds only the
    transformer (output last_hidden_state). So this exports the full pipeline with optimum's
    sentence_transformers library path (outputs token_embeddings and sentence_embedding = mean
    pooling, Dense, Dense, Normalize), like onnx-community's export, which fastembed reads with
    output_name="sentence_embedding" and pooling DISABLED. If that export fails, the folder points
    fastembed at the harness's transformer-only graph with mean pooling + normalization: the best
    fastembed can express, without the Dense head, which the fidelity column then shows.
    """
    import onnx
    from optimum.exporters.onnx import main_export

    out_p = Path(out)
    tmp = _fresh(out_p)
    t0 = time.perf_counter()
    info: dict = {}
    try:
        main_export(model, output=str(tmp), task="feature-extraction", library_name="sentence_transformers",
                    do_validation=False, device="cpu")
        m = onnx.load(str(tmp / "model.onnx"), load_external_data=False)
        outs = [o.name for o in m.graph.output]
        ins = [i.name for i in m.graph.input]
        if "sentence_embedding" not in outs:
            raise RuntimeError(f"no sentence_embedding output (outputs {outs})")
        data = sorted(p.name for p in tmp.iterdir() if p.name.startswith("model.onnx") and p.name != "model.onnx")
        info.update(fastembed_model_file="model.onnx", fastembed_output_name="sentence_embedding",
                    fastembed_additional_files=data, onnx_outputs=outs, onnx_inputs=ins,
                    fastembed_export_note="the harness's own ONNX export of the whole sentence-transformers pipeline "
                    "(optimum main_export, library sentence_transformers: Transformer, mean Pooling, Dense, Dense, "
                    "Normalize in the graph; output sentence_embedding), not onnx-community's files")
        # fastembed reads tokenizer.json, tokenizer_config.json (model_max_length: its truncation) and
        # special_tokens_map.json beside the model: the source model's own files
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
        if sliding_window is not None and (tmp / "config.json").is_file():
            cfg = json.loads((tmp / "config.json").read_text())
            if cfg.get("sliding_window") not in (None, sliding_window):
                cfg["sliding_window"] = sliding_window
                (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    except Exception as e:  # noqa: BLE001
        _log(f"full-pipeline ONNX export failed ({type(e).__name__}: {e}); fastembed falls back to {onnx_dir}")
        shutil.rmtree(tmp)
        tmp = _fresh(out_p)
        src = Path(onnx_dir)
        m = onnx.load(str(src / "onnx" / "model.onnx"), load_external_data=False)
        outs = [o.name for o in m.graph.output]
        data = sorted(p.relative_to(src).as_posix() for p in (src / "onnx").iterdir()
                      if p.name.startswith("model.onnx") and p.name != "model.onnx")
        (tmp / "onnx").mkdir()
        for rel in ["onnx/model.onnx", *data]:  # hard links: no second copy of the weights
            try:
                os.link(src / rel, tmp / rel)
            except OSError:
                shutil.copy2(src / rel, tmp / rel)
        info.update(fastembed_model_file="onnx/model.onnx", fastembed_output_name=None,
                    fastembed_additional_files=data, onnx_outputs=outs, fallback_error=f"{type(e).__name__}: {e}",
                    fastembed_export_note=f"the harness's ONNX export {src.name}/onnx/model.onnx (transformer only, "
                    "output last_hidden_state), not onnx-community's files",
                    fastembed_fidelity_note="fastembed cannot express EmbeddingGemma's Dense 768->3072->768 head "
                    "after pooling: mean pooling + normalization of the transformer output only (the full-pipeline "
                    "ONNX export failed)")
        for f in src.iterdir():  # tokenizer / config files beside the model, as fastembed reads them
            if f.is_file() and f.suffix == ".json" and f.name != "export.json":
                shutil.copy2(f, tmp / f.name)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    (tmp / "export.json").write_text(json.dumps({"files": files, **info}, indent=1))
    _log(f"fastembed ONNX folder ready in {info['seconds']:.0f} s ({info['fastembed_export_note'][:60]}...)")
    _commit(tmp, out_p)


# --------------------------------------------------------------------------------------------
# GGUF through llama.cpp's own converter (from the llama-cpp-python sdist)


def fetch_llama_src(version: str, dest: str) -> None:
    """Download the llama-cpp-python sdist (PyPI) and unpack llama.cpp's converter + gguf-py."""
    dest_p = Path(dest)
    tmp = _fresh(dest_p)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    f"llama-cpp-python=={version}", "-d", str(tmp)], check=True, stdout=sys.stderr)
    sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
    keep = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/",
            "vendor/llama.cpp/LICENSE")
    with tarfile.open(sdist) as tf:
        members = []
        for m in tf.getmembers():
            rel = m.name.split("/", 1)[1] if "/" in m.name else ""
            if any(rel == k or rel.startswith(k) for k in keep) and (m.isfile() or m.isdir()):
                m.name = rel
                members.append(m)
        tf.extractall(tmp, members=members, filter="data")
    sdist.unlink()
    _commit(tmp, dest_p)


def convert_gguf(model: str, llama_src: str, out: str, outtypes: list[str], tokenizer_dir: str) -> None:
    import gguf as _  # noqa: F401  (fail early if the gguf package is missing)

    src = Path(llama_src) / "vendor" / "llama.cpp"
    out_p = Path(out)
    tmp = _fresh(out_p)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src / "gguf-py"), str(src)]),
               NO_LOCAL_GGUF="")
    info = {}
    for t in outtypes:
        t0 = time.perf_counter()
        f = tmp / f"model-{t}.gguf"
        cmd = [sys.executable, str(Path(__file__).with_name("gguf_convert.py")), model, "--outtype", t,
               "--outfile", str(f), "--sentence-transformers-dense-modules"]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (tmp / f"convert-{t}.log").write_text(r.stdout)
        if r.returncode != 0:
            raise SystemExit(f"convert_hf_to_gguf.py --outtype {t} failed:\n{r.stdout[-4000:]}")
        tensors = gguf_tensor_summary(f)
        dense = [n for n in tensors if n.startswith("dense_")]
        if not any(n.startswith("dense_2") for n in dense) or not any(n.startswith("dense_3") for n in dense):
            raise SystemExit(f"{f.name}: the Dense tensors are missing from the GGUF (found {dense})")
        info[t] = {"file": f.name, "bytes": f.stat().st_size, "dense_tensors": {n: tensors[n] for n in dense},
                   "n_tensors": len(tensors), "seconds": round(time.perf_counter() - t0, 1)}
        _log(f"gguf {t}: {f.stat().st_size / 1e6:.0f} MB, dense tensors {dense}")
    # the model's tokenizer beside the files: embgemma's GGUF loader prefers it to the GGUF metadata
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copyfile(Path(tokenizer_dir) / name, tmp / name)
    (tmp / "export.json").write_text(json.dumps(info, indent=1))
    _commit(tmp, out_p)


def gguf_tensor_summary(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    return {t.name: {"shape": [int(x) for x in t.shape], "type": t.tensor_type.name} for t in r.tensors}


STEPS = {
    "build_model": build_model,
    "export_onnx": export_onnx,
    "export_openvino": export_openvino,
    "export_openvino_qint8": export_openvino_qint8,
    "export_openvino_wc8": export_openvino_wc8,
    "export_onnx_st": export_onnx_st,
    "fetch_llama_src": fetch_llama_src,
    "convert_gguf": convert_gguf,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--args", required=True, help="JSON object of keyword arguments")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    STEPS[a.step](**json.loads(a.args))


if __name__ == "__main__":
    main()
