"""Regenerates the committed golden files: a tiny random EmbeddingGemma-shaped model and the
embeddings sentence-transformers computes for it. Run deliberately, from the repo root:

    python tests/data/make_golden.py

Needs the test extra (torch, transformers, sentence-transformers). The core tests then run
against these files without the reference stack.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import refmodel  # noqa: E402

GOLDEN_ARCH = dict(
    hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1,
    head_dim=24, max_position_embeddings=256, sliding_window=12, query_pre_attn_scalar=24,
)
TEXTS = [
    "Which planet is known as the Red Planet?",
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Jupiter, the largest planet in our solar system, has a prominent red spot.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
    "a",
    ("The quick brown fox jumps over the lazy dog. " * 3).strip(),
]
CASES = [  # (name, encode kwargs)
    ("plain", {}),
    ("query", {"prompt_name": "query"}),
    ("document", {"prompt_name": "document"}),
    ("clustering_dim16", {"prompt_name": "Clustering", "truncate_dim": 16, "normalize_embeddings": True}),
]


def main() -> None:
    out = HERE / "golden_model"
    if out.exists():
        shutil.rmtree(out)
    refmodel.build(out, GOLDEN_ARCH, seed=1234, dense_dims=(96, 48), sliding_window_pattern=2)
    shutil.rmtree(out.parent / (out.name + "_hf"))
    for junk in ["README.md"]:
        (out / junk).unlink(missing_ok=True)
    st = refmodel.load_reference(out)
    arrays = {}
    for name, kw in CASES:
        arrays[name] = st.encode(TEXTS, batch_size=3, **kw).astype(np.float32)
    np.savez(HERE / "golden_expected.npz", **arrays)
    (HERE / "golden_cases.json").write_text(json.dumps({"texts": TEXTS, "cases": CASES}, indent=1) + "\n")
    print("wrote", out, "and golden_expected.npz")


if __name__ == "__main__":
    main()
