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
