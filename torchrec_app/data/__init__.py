"""The data side: generate Criteo-format text, preprocess it to Parquet, read per-rank batches.

Raw Criteo TSV/CSV (:mod:`.criteo_format`) -> ``torchrec-app preprocess``
(:mod:`.preprocess`: :mod:`.splits`, :mod:`.vocab`, :mod:`.metadata`) -> Parquet +
``metadata.json`` -> :func:`.reader.read_batches` -> :class:`.batch.Batch`.
``torchrec-app generate`` (:mod:`.generate`) writes the built-in data with a known click
model (:mod:`.truth`). See ``docs/DATA.md``.
"""
