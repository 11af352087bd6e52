"""The home-feed ranker (``model.name=feed``): history encoders over a shared item table, a DCNv2
shared bottom and multi-task heads; see ``docs/MODELS.md`` ("Home-feed ranker").

* ``encoders.py`` — mean / LSTM / GRU / DIN target attention / transformer over jagged histories;
* ``heads.py`` — shared-bottom towers, MMoE, PLE;
* ``losses.py`` — per-objective weighted BCE and the weighting hook (``WEIGHTINGS``);
* ``weighting.py`` — uncertainty weighting and DWA, registered in ``WEIGHTINGS`` on import;
* ``correction.py`` — calibrated probabilities from a model trained on negatively downsampled data;
* ``model.py`` — the tables, :class:`~torchrec_app.models.feed.model.FeedTower` and the trainable unit;
* ``task.py`` — :data:`~torchrec_app.models.feed.task.FEED_TASK`, registered by ``torchrec_app.models``.
"""

from torchrec_app.models.feed import weighting as _weighting  # noqa: F401  (registers uncertainty, dwa)
