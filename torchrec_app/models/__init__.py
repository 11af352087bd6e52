"""Model families; importing this package registers each one with the training loop.

* CTR towers (DLRM, DCNv2, DCNv3, MaskNet, DNN) in ``towers/``, registered by name in
  :mod:`.registry` and, through :data:`.ctr.CTR_TASK`, with the loop (:mod:`.task`).
* Next-item models (SASRec, BERT4Rec, GRU4Rec, S3Rec pretraining) in ``sequential/``,
  through :data:`.sequential.task.NEXT_ITEM_TASK`.
* General recommenders (EASE, closed-form; Multi-VAE) in ``general/``, through
  :data:`.general.task.EASE_TASK` and :data:`.general.task.MULTIVAE_TASK`.
* The home-feed ranker (``feed``: history encoders, DCNv2, multi-task heads) in ``feed/``,
  through :data:`.feed.task.FEED_TASK`.
"""

from torchrec_app.models.ctr import CTR_TASK
from torchrec_app.models.feed.task import FEED_MODELS, FEED_TASK
from torchrec_app.models.general.task import EASE_TASK, MULTIVAE_TASK
from torchrec_app.models.registry import MODELS, build_ctr_model, register_model
from torchrec_app.models.sequential.task import NEXT_ITEM_TASK, SEQUENTIAL_MODELS
from torchrec_app.models.task import TASKS, Task, register_task, task_for
from torchrec_app.models.towers import dcnv2, dcnv3, dlrm, dnn, masknet  # noqa: F401  (registration)

register_task(CTR_TASK, *MODELS)
register_task(NEXT_ITEM_TASK, *SEQUENTIAL_MODELS)
register_task(EASE_TASK, "ease")
register_task(MULTIVAE_TASK, "multivae")
register_task(FEED_TASK, *FEED_MODELS)

__all__ = ["CTR_TASK", "MODELS", "TASKS", "Task", "build_ctr_model", "register_model", "register_task", "task_for"]
