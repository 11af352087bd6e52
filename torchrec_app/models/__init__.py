"""Model architectures; importing this package registers each one."""

from torchrec_app.models.registry import MODELS, build_ctr_model, register_model
from torchrec_app.models.towers import dcnv2, dcnv3, dlrm, dnn, masknet  # noqa: F401  (registration)

__all__ = ["MODELS", "build_ctr_model", "register_model"]
