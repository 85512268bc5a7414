"""Tokenization with the real Gemma 3 tokenizer (EMBGEMMA_TEST_TOKENIZER_DIR, set by .ci/run)."""

from __future__ import annotations

import pytest

from conftest import HAVE_REFERENCE
from embgemma import EmbeddingGemma
from embgemma.tokenization import load_tokenizer

CHECKED = [  # from the tokenizer's README: published EmbeddingGemma tokenizations
    ("Hello world", [2, 9259, 1902, 1]),
    ("Hello world something else", [2, 9259, 1902, 2613, 1663, 1]),
    (
        "task: search result | query: Which planet is known as the Red Planet?",
        [2, 8071, 236787, 3927, 1354, 1109, 7609, 236787, 15311, 13401, 563, 3224, 618, 506, 4855, 38342, 236881, 1],
    ),
]


@pytest.fixture(scope="module")
def model(golden_dir, gemma_tokenizer_dir):
    m = EmbeddingGemma(golden_dir)
    m._set_tokenizer(*load_tokenizer(gemma_tokenizer_dir))
    m._max_seq_length = 2048
    # tokenization only: give the golden model the real vocabulary size (encode is never called here)
    m._info = dict(m._info, vocab_size=262144)
    return m


def _ids(model, text, **kw):
    return model._token_ids([text], truncate=kw.get("truncate", True))[0]


@pytest.mark.parametrize("text,ids", CHECKED)
def test_checked_ids(model, text, ids):
    assert _ids(model, text) == ids
    assert model.tokenize(text)["input_ids"][0].tolist() == ids


def test_vocabulary_and_specials(model):
    assert model.tokenizer.get_vocab_size(with_added_tokens=False) == 262144
    assert (model.bos_token_id, model.eos_token_id) == (2, 1)
    assert _ids(model, "") == [2, 1]


def test_prompt_is_prepended_and_whitespace_kept(model):
    """prompt + text as sentence-transformers 6 forms it; strip=True (strip_whitespace, 5.x) strips it."""
    from embgemma.tokenization import prepare_text

    prompt = "task: search result | query: "
    assert prepare_text("Which planet is known as the Red Planet?", 0, prompt) == CHECKED[2][0]
    assert _ids(model, prepare_text("Which planet is known as the Red Planet?", 0, prompt)) == CHECKED[2][1]
    padded = prepare_text("Which planet is known as the Red Planet?  \n", 0, prompt)
    assert padded == CHECKED[2][0] + "  \n" and _ids(model, padded) != CHECKED[2][1]
    text = prepare_text("Which planet is known as the Red Planet?  \n", 0, prompt, strip=True)
    assert _ids(model, text) == CHECKED[2][1]


def test_truncation_keeps_bos_and_eos(model):
    long = "word " * 5000
    with pytest.warns(UserWarning, match="truncated"):
        ids = _ids(model, long.strip())
    assert len(ids) == 2048 and ids[0] == 2 and ids[-1] == 1
    full = model.tokenizer.encode(long.strip()).ids
    assert ids[1:-1] == full[1:2047]
    with pytest.raises(ValueError, match="text 0 has .* tokens, more than max_seq_length=2048"):
        _ids(model, long.strip(), truncate=False)


@pytest.mark.skipif(not HAVE_REFERENCE, reason="needs transformers")
def test_same_ids_as_transformers(model, gemma_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(gemma_tokenizer_dir))
    texts = [t for t, _ in CHECKED] + [
        "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
        "naïve café — 東京 🚀 emoji\ttabs\nnewlines",
        "   leading and trailing   ",
        "word " * 3000,
    ]
    for t in texts:
        t = t.strip()
        want = hf(t, truncation=True, max_length=2048)["input_ids"]
        assert model._token_ids([t], truncate=True)[0] == want, t[:40]
    # outer whitespace is tokenized as given (sentence-transformers 6): spaces, tabs, newlines, CRLF
    for t in ["Mars is red.\n", "  padded  ", "\tx\t", "   ", "", " \n\n ", "line\r\n", "\u3000wide\u3000",
              "task: search result | query: Mars is red.\n", "title: none | text:  x "]:
        assert model.tokenize(t)["input_ids"][0].tolist() == hf(t)["input_ids"], repr(t)


def test_token_without_embedding_is_refused(model):
    # the tokenizer knows <image_soft_token> (id 262144) but EmbeddingGemma's table has 262144 rows
    with pytest.raises(ValueError, match="text 1 contains the token '<image_soft_token>'"):
        model._token_ids(["fine", "an <image_soft_token> here"], truncate=True)
