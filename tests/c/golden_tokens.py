"""Writes tests/data/golden_tokens.json: the token ids the Python layer feeds the engine for each
golden case (tests/data/golden_cases.json), with the case's output width and normalization. The C
test driver (tests/c/driver.c) has no tokenizer and reads them instead. Regenerate after changing
the golden files, from the repo root:

    python tests/c/golden_tokens.py

tests/test_c_driver_data.py checks that the committed file is what this writes.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
OUT = DATA / "golden_tokens.json"


def golden_tokens() -> dict:
    """{"cases": {name: {"dim", "normalize", "ids": [[int, ...] per text]}}} for every golden case."""
    import embgemma

    model = embgemma.EmbeddingGemma(DATA / "golden_model")
    spec = json.loads((DATA / "golden_cases.json").read_text())
    cases = {}
    for name, kwargs in spec["cases"]:
        prompt = model.prompts[kwargs["prompt_name"]] if "prompt_name" in kwargs else ""
        tok = model.tokenize([prompt + t for t in spec["texts"]])
        ids = [row[: int(n)].tolist() for row, n in zip(tok["input_ids"], tok["attention_mask"].sum(1))]
        cases[name] = {
            "dim": int(kwargs.get("truncate_dim", model.get_sentence_embedding_dimension())),
            "normalize": bool(kwargs.get("normalize_embeddings", True)),
            "ids": ids,
        }
    return {"cases": cases}


def render(tokens: dict) -> str:
    """The file's text: one line per sequence, so diffs stay readable."""
    lines = ['{"cases": {']
    names = list(tokens["cases"])
    for ci, name in enumerate(names):
        c = tokens["cases"][name]
        lines.append(f'  {json.dumps(name)}: {{"dim": {c["dim"]}, "normalize": {json.dumps(c["normalize"])}, "ids": [')
        for si, ids in enumerate(c["ids"]):
            lines.append("    " + json.dumps(ids) + ("," if si + 1 < len(c["ids"]) else ""))
        lines.append("  ]}" + ("," if ci + 1 < len(names) else ""))
    lines.append("}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(golden_tokens()))
    print("wrote", OUT)
