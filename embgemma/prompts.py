"""EmbeddingGemma's task prompts and how a prompt is chosen for a call.

The table is the one published in the model's ``config_sentence_transformers.json``;
a model folder that carries its own table (a fine-tune, say) overrides it.
"""

from __future__ import annotations

#: The 14 task prompts of google/embeddinggemma-300m (note the trailing spaces).
DEFAULT_PROMPTS: dict[str, str] = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}

#: Names ``encode_document`` tries, in order (as sentence-transformers does).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def document_prompt_with_title(title: str | None) -> str:
    """The model card's document prompt with a real title: ``title: {title} | text: ``."""
    return f"title: {'none' if title is None else title} | text: "


def resolve_prompt(
    prompts: dict[str, str], prompt_name: str | None, prompt: str | None, default_prompt_name: str | None
) -> str:
    """Pick the prompt for a call: an explicit ``prompt``, else ``prompt_name``, else the default.

    Unknown names raise ``ValueError`` listing the valid ones.
    """
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return prompt
    name = prompt_name if prompt_name is not None else default_prompt_name
    if name is None:
        return ""
    if name not in prompts:
        valid = ", ".join(repr(k) for k in prompts)
        raise ValueError(f"unknown prompt_name {name!r}; this model's prompts are: {valid}")
    return prompts[name]
