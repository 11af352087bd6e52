"""Model architectures; importing this package registers each one."""

from torchrec_app.models import dcnv2, dcnv3, dlrm, dnn, masknet  # noqa: F401  (registration)
from torchrec_app.models.registry import MODELS, build_ctr_model, register_model

__all__ = ["MODELS", "build_ctr_model", "register_model"]
