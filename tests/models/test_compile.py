"""model.compile=true: the dense parts run through inductor and give eager's loss and gradients."""

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from tests.batches import random_batch
from torchrec_app.config import ConfigError, resolve_config
from torchrec_app.models.compile import check_inductor
from torchrec_app.models.ctr import build_model

FEATURES = ["C1", "C2", "C3"]
SIZES = {"C1": 30, "C2": 20, "C3": 10}


def test_compiled_dlrm_matches_eager():
    overrides = ["model.name=dlrm", "model.dense_arch=16,8", "model.over_arch=8,1", "sparse.embedding_dim=8"]
    torch.manual_seed(0)
    eager = build_model(resolve_config("tiny", overrides), 4, FEATURES, SIZES, device="cpu")
    compiled = build_model(resolve_config("tiny", [*overrides, "model.compile=true"]), 4, FEATURES, SIZES, device="cpu")
    compiled.load_state_dict(eager.state_dict())  # same names: compilation does not touch the state dict
    assert compiled.model.dense_arch.forward is not eager.model.dense_arch.forward

    batch = random_batch(FEATURES, 4, SIZES, 8, torch.Generator().manual_seed(0))
    for model in (eager, compiled):
        loss, _ = model(batch)
        loss.backward()
    torch.testing.assert_close(compiled(batch)[0], eager(batch)[0])
    for (name, p_eager), (_, p_compiled) in zip(eager.named_parameters(), compiled.named_parameters()):
        torch.testing.assert_close(p_compiled.grad, p_eager.grad, msg=lambda m: f"{name}: {m}")


def test_unusable_inductor_fails_at_build_with_one_clear_error():
    """A machine without a C++ compiler: the real inductor, pointed at a compiler that does not exist."""
    torch._dynamo.reset()
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",), "force_disable_caches": True}):
        with pytest.raises(ConfigError, match=r"model\.compile=true: torch\.compile \(inductor\) cannot compile.*model\.compile=false"):
            check_inductor()
    torch._dynamo.reset()
