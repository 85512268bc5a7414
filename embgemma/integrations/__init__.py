"""Adapters for other libraries, each an optional extra imported only when used:

- ``embgemma.integrations.langchain.EmbeddingGemmaEmbeddings`` (``pip install "embgemma[langchain]"``)
- ``embgemma.integrations.llama_index.EmbeddingGemmaEmbedding`` (``pip install "embgemma[llama-index]"``)
- ``embgemma.integrations.haystack.EmbeddingGemmaTextEmbedder`` / ``EmbeddingGemmaDocumentEmbedder``
  (``pip install "embgemma[haystack]"``)
- ``embgemma.integrations.txtai.EmbGemmaVectors`` (``pip install "embgemma[txtai]"``)
- ``embgemma.integrations.chroma.EmbGemmaEmbeddingFunction`` (``pip install "embgemma[chroma]"``)
- ``embgemma.sklearn.EmbeddingGemmaVectorizer`` (``pip install "embgemma[sklearn]"``)

All of them map their framework's calls through ``embgemma.integrations._common.Encoder``: queries
get the model's query prompt, documents its document prompt (with a title where the framework has
one), vectors are normalized, and the Matryoshka width is the engine's ``truncate_dim``.
"""
