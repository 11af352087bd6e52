"""From ``export`` to serving: score raw Criteo rows with an exported model, no process group.

    scorer = CTRScorer.load("model.pt", run_dir="runs/my-run", data_dir="data/generated/parquet")
    scorer.score_lines(["0\\t1\\t\\t5\\t...\\t68fd1e64\\t..."])      # -> click probabilities, one per row

A raw row takes exactly the path training rows took, with the same code:

1. the Criteo text is parsed and its dense values transformed (:func:`~torchrec_app.data.criteo_format.parse_block`);
2. raw ids become table rows through the dataset's saved vocabularies (or ``raw % hash_size``
   for hashed features) — what ``preprocess`` wrote (:func:`~torchrec_app.data.preprocess.write.rows_to_table`);
3. the rows become a batch as the reader makes them (``data.max_ind_range`` included,
   :func:`~torchrec_app.data.batch.criteo_batch_maker`);
4. the model is rebuilt unsharded on the CPU from the run's ``config.json`` and ``metadata.json``
   by its task, the exported tensors loaded into it (``torch.load(weights_only=True)``), and
   ``sigmoid(logit)`` is the probability.

A label column is optional: unlabeled rows (39 fields, like Kaggle's ``test.txt``) score the same.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from torchrec_app.config.errors import ConfigError
from torchrec_app.data import criteo_format as fmt
from torchrec_app.data.batch import criteo_batch_maker
from torchrec_app.data.metadata import DatasetMetadata, load_metadata
from torchrec_app.data.preprocess.vocab_pass import load_vocabularies
from torchrec_app.data.preprocess.write import parquet_schema, rows_to_table
from torchrec_app.models import task_for
from torchrec_app.tools.explain.trained_model import load_run_config


class CTRScorer:
    """An exported CTR model and the id mapping of the dataset it trained on."""

    def __init__(self, model: torch.nn.Module, metadata: DatasetMetadata, vocab_dir: str, config) -> None:
        self.model = model.eval()
        self.metadata = metadata
        self.config = config
        features = tuple(f for f, strategy in metadata.id_strategies.items() if strategy == "vocab")
        self.vocabularies = load_vocabularies(vocab_dir, features) if features else {}
        self.preprocess = replace(config.preprocess, hash_size=metadata.hash_size, multi_hot=metadata.multi_hot)
        self.columns, self.make_batch = criteo_batch_maker(metadata, config.data)

    @classmethod
    def load(cls, export: str | Path, run_dir: str | Path, data_dir: str | Path) -> "CTRScorer":
        """The model of ``export`` (``torchrec-app export --out FILE``), built as ``run_dir`` trained it;
        vocabularies from ``data_dir`` (the dataset it trained on)."""
        config = load_run_config(Path(run_dir))
        metadata = load_metadata(str(data_dir))
        if metadata.kind != "criteo":
            raise ConfigError(f"{data_dir}: a {metadata.kind!r} dataset; this scorer reads Criteo rows")
        model = task_for(config.model.name).build_model(config, metadata, "cpu")
        state = torch.load(Path(export), weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{export} does not match the run's model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return cls(model, metadata, str(Path(data_dir) / metadata.vocab_dir), config)

    def score_lines(self, lines: Sequence[str], labeled: bool | None = None) -> np.ndarray:
        """Click probabilities of raw Criteo TSV rows (``label`` first when ``labeled``; by
        default a row of 40 fields is labeled and one of 39 is not)."""
        if not lines:
            return np.zeros(0, dtype=np.float32)
        text = "".join(line.rstrip("\r\n") + "\n" for line in lines).encode()
        fields = lines[0].rstrip("\r\n").count("\t") + 1
        labeled = fields == len(fmt.COLUMNS) if labeled is None else labeled
        layout = fmt.TextFormat(delimiter="\t", header=False, gzip=False,
                                columns=tuple(fmt.COLUMNS if labeled else fmt.UNLABELED_COLUMNS))  # fmt: skip
        try:
            rows = fmt.parse_block(text, layout, multi_hot=self.metadata.multi_hot,
                                   separator=self.preprocess.multi_hot_separator, keep_label=False)  # fmt: skip
        except fmt.BlockRejected as err:
            bad = fmt.find_bad_lines(text, layout, multi_hot=self.metadata.multi_hot, separator=self.preprocess.multi_hot_separator)
            where = f"row {bad[0].index + 1}: field {bad[0].field}: {bad[0].message}" if bad else str(err)
            raise fmt.DataFormatError(f"cannot score: {where}") from None
        rows.row_ids = np.arange(rows.num_rows)  # scoring rows: numbered in the order given
        schema = parquet_schema(self.metadata.multi_hot, pa.int64(), scoring=True)
        table = rows_to_table(rows, self.preprocess, self.vocabularies, schema, "int64")
        batch = self.make_batch(table, table.num_rows)
        with torch.no_grad():
            _, output = self.model(batch)
        logits = next(iter(output.predictions.values()))
        return torch.sigmoid(logits).numpy()
