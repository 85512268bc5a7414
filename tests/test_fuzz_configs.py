"""Property test: a model folder whose JSON files are randomly mutated either loads and encodes, or
raises a clean exception of a documented type whose message names the file.

The files read with Python's json module (config_sentence_transformers.json, tokenizer_config.json,
sentence_bert_config.json, and modules.json, which the C core also reads) get the most cases; the
ones only the C core reads (config.json, the Pooling and Dense configs) are fuzzed in C
(tests/fuzz/run.sh, target "config") and get a smaller share here, through the real loading path.
Seeded: a failure prints its seed and the mutated text, and replays with the same seed.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN_DIR
from embgemma import EmbeddingGemma

PYTHON_FILES = ["config_sentence_transformers.json", "tokenizer_config.json", "sentence_bert_config.json",
                "modules.json"]
C_FILES = ["config.json", "1_Pooling/config.json", "2_Dense/config.json"]
CASES = [(f, seed) for f in PYTHON_FILES for seed in range(80)] + [(f, seed) for f in C_FILES for seed in range(25)]
# what loading a bad folder may raise (ModelFormatError and UnsupportedModelError are ValueErrors)
CLEAN = (ValueError, OSError, TypeError)


def _random_scalar(rng: random.Random):
    return rng.choice([
        None, True, False, 0, 1, -1, 2, 3, 2**31, -(2**63), 2**64, 10**400, 0.5, -0.0, 1e308, float("nan"),
        float("inf"), "", "mean", "<bos>", "<eos>", "query", "document", "\ud800", "a\x00b", "\u2581x" * 3,
        "../..", "/etc", "x" * 300, "sentence_transformers.models.Dense",
    ])


def _random_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 2 or r < 0.6:
        return _random_scalar(rng)
    if r < 0.8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["content", "path", "type", "query", "x", ""]): _random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _containers(obj, out):
    if isinstance(obj, (dict, list)):
        out.append(obj)
        for v in obj.values() if isinstance(obj, dict) else obj:
            _containers(v, out)
    return out


def mutate(text: str, rng: random.Random) -> str:
    """1-3 structural edits (replace / delete / add a value anywhere, change the root), or a byte edit."""
    if rng.random() < 0.2:  # text level: truncation, a flipped or inserted character, invalid UTF-8 later
        i = rng.randrange(len(text) + 1)
        return rng.choice([text[:i], text[:i] + rng.choice("{}[],:\"\\0x\u00e9") + text[i:], text[:i] + text[i + 1:]])
    obj = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.05:
            obj = _random_value(rng)
            continue
        spots = _containers(obj, [])
        if not spots:
            break
        c = rng.choice(spots)
        keys = list(c.keys()) if isinstance(c, dict) else list(range(len(c)))
        op = rng.random()
        if keys and op < 0.6:
            c[rng.choice(keys)] = _random_value(rng)
        elif keys and op < 0.8:
            del c[rng.choice(keys)]
        elif isinstance(c, dict):
            c[rng.choice(["prompts", "default_prompt_name", "max_seq_length", "bos_token", "eos_token",
                          "add_bos_token", "add_eos_token", "model_max_length", "do_lower_case",
                          "similarity_fn_name", "path", "type"])] = _random_value(rng)
        else:
            c.insert(rng.randrange(len(c) + 1), _random_value(rng))
    return json.dumps(obj)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cfgfuzz")


@pytest.fixture(scope="module")
def golden_texts_out():
    m = EmbeddingGemma(GOLDEN_DIR)
    return m.encode(["a query", "a document"], prompt="")


@pytest.mark.parametrize("name,seed", CASES, ids=lambda v: str(v))
def test_mutated_config_loads_or_fails_cleanly(name, seed, tmp_path, golden_texts_out):
    rng = random.Random(f"{name}/{seed}")
    folder = tmp_path / "model"
    shutil.copytree(GOLDEN_DIR, folder)
    target = folder / name
    text = mutate(target.read_text(encoding="utf-8"), rng)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        data = data[: len(data) // 2] + b"\xff\xfe" + data[len(data) // 2:]  # not UTF-8
    target.write_bytes(data)
    context = f"seed {seed}: {name} = {data[:400]!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = EmbeddingGemma(folder, threads=1)  # one thread: immune to a busy machine's scheduling
    except CLEAN as e:
        assert str(e), f"{type(e).__name__} without a message; {context}"
        assert str(folder) in str(e) or Path(name).name in str(e), f"message does not name the file: {e}; {context}"
        return
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"{type(e).__name__}: {e}; {context}")
    # it loaded (a mutation may legitimately change the pipeline or the tokenizer's template):
    # every prompt encodes to finite vectors of the model's width
    for prompt_name in [None, *m.prompts]:
        try:
            v = m.encode(["a query", "a document"], prompt_name=prompt_name)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"loaded, but encode(prompt_name={prompt_name!r}) raised {type(e).__name__}: {e}; {context}")
        assert v.shape == (2, m.get_sentence_embedding_dimension()) and np.isfinite(v).all(), context
    m.encode_query("q")
    m.encode_document("d")
    if name == "config_sentence_transformers.json":  # prompts only: the numbers without one are the golden model's
        np.testing.assert_array_equal(m.encode(["a query", "a document"], prompt=""), golden_texts_out, err_msg=context)


# what the mutations above found, kept as fixed cases: (file, content, exception, message)
FOUND = [
    ("config_sentence_transformers.json", '{"default_prompt_name": ["x"]}', "ModelFormatError",
     "default_prompt_name .* is not one of the prompts"),  # was TypeError: unhashable type: 'list'
    ("config_sentence_transformers.json", '{"prompts": {"query": "\\ud800"}}', "ModelFormatError",
     "lone surrogate"),  # was accepted, then every encode_query failed naming the user's text
    ("config_sentence_transformers.json", '{"similarity_fn_name": 3}', "ModelFormatError", "similarity_fn_name"),
    ("config_sentence_transformers.json", "[" * 100_000 + "]" * 100_000, "ModelFormatError",
     "cannot read JSON"),  # was RecursionError
    ("tokenizer_config.json", '{"bos_token": 2}', "ModelFormatError",
     "bos_token must be a token string"),  # was TypeError from tokenizers, no file named
    ("tokenizer_config.json", '{"eos_token": "\\ud800"}', "ModelFormatError", "eos_token"),  # was UnicodeEncodeError
    ("tokenizer_config.json", '{"add_eos_token": []}', "ModelFormatError",
     "add_eos_token must be true or false"),  # was accepted as False
    ("sentence_bert_config.json", '{"max_seq_length": 2}', "ModelFormatError",
     "max_seq_length = 2 leaves no room"),  # was "max_seq_length must be ..." as if the caller had passed it
    ("tokenizer_config.json", '{"model_max_length": true}', None, None),  # a bool is not a length: ignored
    # C messages quoting bytes that are not UTF-8 became UnicodeDecodeError (here: the missing folder p\xff)
    ("modules.json", b'[{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": "p\xff"}]', "OSError",
     "p\\\\xff/config.json"),
    ("config.json", '{"model_type": "x' + "\u00e9" * 30 + '"}', "UnsupportedModelError",
     r'model_type is "x\u00e9{19}\\xc3"'),  # %.40s cut the 20th \u00e9 in half
]


@pytest.mark.parametrize("name,content,exc,match", FOUND, ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_found_cases(name, content, exc, match, tmp_path):
    import embgemma

    folder = tmp_path / "model"
    shutil.copytree(GOLDEN_DIR, folder)
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if exc is None:
        EmbeddingGemma(folder, threads=1).encode("ok")
        return
    with pytest.raises(getattr(embgemma, exc, OSError), match=match) as info:
        EmbeddingGemma(folder, threads=1)
    assert str(folder) in str(info.value)
