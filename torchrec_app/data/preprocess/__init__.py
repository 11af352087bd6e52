"""``torchrec-app preprocess``: Criteo TSV/CSV files -> Parquet that training reads cheaply.

    torchrec-app preprocess --train train.txt --valid valid.txt [--test test.txt] --out DIR
    torchrec-app preprocess --input train.txt --split kaggle_days --out DIR
    torchrec-app preprocess --input day_0.gz ... day_23.gz --split criteo_1tb_days --out DIR \\
        preprocess.id_strategy=hash preprocess.hash_size=40000000
    torchrec-app preprocess --input data.csv --split random --out DIR preprocess.min_frequency=3

How it works, one module per step:

1. **Plan** (:mod:`.plan`). Each input is cut into tasks: byte ranges of ~64-512 MiB
   starting at line starts for plain files, the whole file for gzip. Row-order split
   policies count rows first (:mod:`torchrec_app.data.splits`).
2. **Parse once** (:mod:`.parse`, :mod:`torchrec_app.data.criteo_format`). Worker processes
   (:mod:`.pool`; one task each at a time, all cores) parse blocks of
   ``preprocess.block_bytes`` with pyarrow.
3. **Ids and Parquet.** All features hashed (``raw % hash_size``): each task's rows go
   straight to ``<split>/part-<task>.parquet`` (:mod:`.write`), row groups of
   ``preprocess.row_group_rows``. Any feature with the ``vocab`` strategy: the parse
   writes each task's rows to a staged Arrow stream and counts its train ids
   (:mod:`.vocab_pass`, :mod:`.stage`); the parent merges the counts into
   ``vocab/<f>.parquet`` (:mod:`torchrec_app.data.vocab`); then each task's staged rows
   are mapped (only each block's distinct raw ids are looked up) and written as Parquet
   (:mod:`.write`), and its staged files deleted. The text is never parsed twice.
4. **Publish** (:mod:`.run`, :mod:`.output`). ``metadata.json``
   (:mod:`torchrec_app.data.metadata`) is written last.

Output and restarts (:mod:`.output`): the dataset is built in ``OUT/build-<fingerprint>/``
beside whatever ``OUT`` held, and published by one atomic rename of ``OUT/metadata.json``
(whose file paths point into the build); only then are the previous dataset's files
deleted. A run that fails or is killed leaves the previous dataset byte-identical and
loadable. Every file is written under a ``.tmp`` name and renamed when complete; a
finished task leaves ``_progress/task-NNNNN.json`` in its build. A rerun with the same
inputs and settings (same fingerprint, same build directory) deletes leftover ``.tmp``
files and redoes only unfinished tasks; with anything changed it starts a new build and
deletes the abandoned one.

Bad input (wrong column count, non-integer dense value, non-hex id, label not 0/1,
truncated gzip, empty or missing file, a header that does not name the columns) stops
the run with ``file:line: field F: ...``; :mod:`torchrec_app.data.criteo_format` says
exactly what each field accepts. Unlabeled files (Kaggle's ``test.txt``) are accepted for
the ``score`` split only. With ``--on-bad-rows skip`` bad rows are dropped and counted, and the run still fails
once more than ``--max-bad-rows`` were dropped. A ``truth.json`` beside the inputs (from
``torchrec-app generate``) is copied into the output.
"""

from torchrec_app.data.preprocess.plan import count_rows, plan_tasks
from torchrec_app.data.preprocess.run import preprocess_dataset

__all__ = ["count_rows", "plan_tasks", "preprocess_dataset"]
