"""Adapters for other libraries, each an optional extra imported only when used:

- ``embgemma.integrations.langchain.EmbeddingGemmaEmbeddings`` (``pip install "embgemma[langchain]"``)
- ``embgemma.integrations.llama_index.EmbeddingGemmaEmbedding`` (``pip install "embgemma[llama-index]"``)
- ``embgemma.sklearn.EmbeddingGemmaVectorizer`` (``pip install "embgemma[sklearn]"``)
"""
