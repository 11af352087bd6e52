"""The feed-impression schema: raw columns (what users write) and the preprocessed Parquet columns.

One row is one impression: a candidate ``item`` shown to ``user`` in ``session``, with the
user's history before it and one label per objective. The raw format (Parquet with list
columns, or JSON Lines with the same keys) has these columns:

===================  ===========  ===========================================================
column               type         meaning
===================  ===========  ===========================================================
``user``             int64        raw user id
``session``          int64        raw session id (impressions of one session share a history)
``item``             int64        raw id of the candidate item
``category``         int64        the candidate's category
``keywords``         list<int64>  the candidate's keyword ids (multi-hot, large vocabulary)
``position``         float        slot of the impression in the feed (0 = top)
``price``            float        the candidate's price (>= 0)
``hour``             float        hour of day of the impression, 0..24
``ctx_device``       int64        context categorical: device
``ctx_surface``      int64        context categorical: surface (home, search, ...)
``ctx_region``       int64        context categorical: region
``hist_<action>``    list<int64>  raw item ids the user acted on, **newest first**, for each
                                  action in click, watch, chat, hide, report (may be empty)
``label_<objective>``  int 0/1    one label per objective: click, watch, chat, hide, report
===================  ===========  ===========================================================

A JSON Lines row, for example::

    {"user": 7, "session": 70, "item": 1234, "category": 5, "keywords": [11, 940],
     "position": 3, "price": 12.5, "hour": 20.0, "ctx_device": 1, "ctx_surface": 0, "ctx_region": 31,
     "hist_click": [88, 1234, 17], "hist_watch": [88], "hist_chat": [], "hist_hide": [501], "hist_report": [],
     "label_click": 1, "label_watch": 0, "label_chat": 0, "label_hide": 0, "label_report": 0}

Preprocessed Parquet (``preprocess --kind feed``): the same names, ids replaced by
vocabulary indices (int32; 0 = rare or unseen), histories cut to ``max_history``, dense
columns standardised on train (float32), labels int8, plus ``importance`` (float32, the
row's loss multiplier: 1 unless a core-set selector reweights it).
"""

from __future__ import annotations

import pyarrow as pa

from torchrec_app.data.feed.batch import ACTIONS, CANDIDATE, ITEM_TABLE, OBJECTIVES, history_key

KIND = "feed"
#: dense context columns, in ``FeedBatch.dense_features`` column order
DENSE_FEATURES: tuple[str, ...] = ("position", "price", "hour")
#: single-id context categoricals (pooled)
CONTEXT_FEATURES: tuple[str, ...] = ("ctx_device", "ctx_surface", "ctx_region")
#: pooled categorical features, in ``FeedBatch.pooled`` key order; ``keywords`` is multi-hot
POOLED_FEATURES: tuple[str, ...] = ("user", "category", "keywords", *CONTEXT_FEATURES)
MULTI_HOT_FEATURES: tuple[str, ...] = ("keywords",)
#: sequence features, in ``FeedBatch.sequences`` key order; all read the item table
SEQUENCE_FEATURES: tuple[str, ...] = (CANDIDATE, *(history_key(a) for a in ACTIONS))
HISTORY_FEATURES: tuple[str, ...] = SEQUENCE_FEATURES[1:]
ID_COLUMNS: tuple[str, ...] = ("user", "session")
IMPORTANCE = "importance"


def label_column(objective: str) -> str:
    """Column of one objective's label.

    >>> label_column("chat")
    'label_chat'
    """
    return f"label_{objective}"


LABEL_COLUMNS: tuple[str, ...] = tuple(label_column(o) for o in OBJECTIVES)

#: vocabulary of each id column: every sequence feature reads the item vocabulary
VOCABULARY_OF: dict[str, str] = {
    "user": "user", "category": "category", "keywords": "keywords",
    **{name: name for name in CONTEXT_FEATURES}, **{name: "item" for name in SEQUENCE_FEATURES},
}  # fmt: skip
VOCABULARIES: tuple[str, ...] = ("user", "item", "category", "keywords", *CONTEXT_FEATURES)

_ID, _IDS = pa.int64(), pa.list_(pa.int64())
#: the raw columns and their types (JSON Lines are read with this schema)
RAW_SCHEMA = pa.schema(
    [("user", _ID), ("session", _ID), ("item", _ID), ("category", _ID), ("keywords", _IDS)]
    + [(name, pa.float64()) for name in DENSE_FEATURES]
    + [(name, _ID) for name in CONTEXT_FEATURES]
    + [(name, _IDS) for name in HISTORY_FEATURES]
    + [(name, pa.int64()) for name in LABEL_COLUMNS]
)
RAW_COLUMNS: tuple[str, ...] = tuple(RAW_SCHEMA.names)

_INDEX, _INDICES = pa.int32(), pa.list_(pa.int32())
#: the preprocessed Parquet columns and their types
PARQUET_SCHEMA = pa.schema(
    [("user", _INDEX), ("session", pa.int64()), ("item", _INDEX), ("category", _INDEX), ("keywords", _INDICES)]
    + [(name, pa.float32()) for name in DENSE_FEATURES]
    + [(name, _INDEX) for name in CONTEXT_FEATURES]
    + [(name, _INDICES) for name in HISTORY_FEATURES]
    + [(name, pa.int8()) for name in LABEL_COLUMNS]
    + [(IMPORTANCE, pa.float32())]
)

__all__ = ["ACTIONS", "CANDIDATE", "ITEM_TABLE", "OBJECTIVES", "history_key"]
