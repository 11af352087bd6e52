"""Time of one training step (forward, backward, optimizer) of the feed model per history encoder.

One process, one thread, no sharding: the model the ``feed`` recipe builds (item dim 32, the newest
50 items per action, DCNv2 + shared-bottom heads), on real batches of 512 rows of a preprocessed
feed dataset, read through the task's own batch maker. Prints the best of 3 repetitions of 4
timed steps (after 2 warm-up steps) per encoder; the docs quote it with the machine's load::

    python examples/feed_encoder_step_time.py data/generated/feed
"""

import sys
import time
from dataclasses import replace

import pyarrow.parquet as pq
import torch

from torchrec_app.config import build_recipe
from torchrec_app.data.metadata import load_metadata
from torchrec_app.models import task_for

ENCODERS = ("none", "mean", "lstm", "gru", "din", "transformer")


def main(data: str, batch_size: int = 512, repeats: int = 3) -> None:
    torch.set_num_threads(1)
    base, metadata, task = build_recipe("feed"), load_metadata(data), task_for("feed")
    rows = pq.read_table(f"{data}/{metadata.files['train'][0].path}")
    best: dict[str, float] = {}
    for _ in range(repeats):
        for encoder in ENCODERS:
            config = replace(base, model=replace(base.model, feed=replace(base.model.feed, encoder=encoder)))
            columns, make_batch = task.batch_maker(config, metadata, data)
            batches = [make_batch(rows.select(columns).slice(i * batch_size, batch_size), batch_size) for i in range(6)]
            torch.manual_seed(0)
            model = task.build_model(config, metadata, "cpu")
            optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
            for step, batch in enumerate(batches):
                if step == 2:
                    start = time.perf_counter()
                optimizer.zero_grad()
                model(batch)[0].backward()
                optimizer.step()
            best[encoder] = min(best.get(encoder, float("inf")), (time.perf_counter() - start) / (len(batches) - 2))
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[0]}")
    for encoder, seconds in best.items():
        print(f"{encoder:12s} {seconds * 1000:7.1f} ms/step  {batch_size / seconds:8.0f} samples/s")


if __name__ == "__main__":
    main(sys.argv[1])
