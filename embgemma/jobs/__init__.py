"""Corpus jobs: embed files of texts into Parquet or ``.npy``, resumably, on any engine.

One home for each part, shared by ``embgemma embed`` (embgemma/embed.py), the Ray engine
(embgemma/integrations/ray.py) and Spark (embgemma/integrations/spark.py):

* ``reasons``  why a row cannot be embedded (the texts' and titles' checks)
* ``embedder`` ``EmbedOptions`` and ``BatchEmbedder``: what a job computes, and computing it a batch at a time
* ``arrow``    Arrow types of the embedding and the id / kept columns; Parquet write settings
* ``inputs``   the format table, input discovery, one reader per format
* ``output``   the output layout (file, ``.npy``, dataset folder), atomic writes, shards and their assembly
* ``manifest`` the job's identity (manifest, model fingerprint) and the output's lock
* ``shards``   the shard loop every engine runs: resume, signals, progress, strict stops

This module imports nothing, so importing one part does not import the others.
"""
