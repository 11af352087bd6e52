"""One cross layer's ``N x N`` weight ``W`` (the matrix in ``x0 * (W x + b)``), from any cross net.

* ``CrossNet``: ``W = kernels[l]`` (``N x N``).
* ``LowRankCrossNet``: computes ``W_kernels[l] @ (V_kernels[l] @ x)``, so
  ``W = W_kernels[l] @ V_kernels[l]`` (``N x r`` times ``r x N``).
* ``LowRankMixtureCrossNet``: expert ``k`` computes ``U_k g(C_k g(V_k x))`` (``g`` = ReLU)
  and a softmax gate over linear functions of ``x`` mixes them. There is no single ``W``;
  the proxy is the experts' linear part (``g`` taken as the identity, i.e. on the inputs
  where it passes) under uniform gates::

      W ~ (1/K) sum_k U_k @ C_k @ V_k       (U_k: N x r, C_k: r x r, V_k: r x N)

  Uniform gates because the gates depend on the input, which ``explain`` does not read;
  gate logits are linear in ``x`` with no bias, so they are 0 in expectation over
  centred inputs.

``state`` is any mapping holding the cross net's tensors under ``prefix`` (a module's
``state_dict()``, or tensors read from a checkpoint).
"""

from __future__ import annotations

from typing import Mapping

import torch

KINDS = {"kernels": "full", "W_kernels": "low_rank", "U_kernels": "mixture"}


def cross_kind(names: list[str] | Mapping[str, object], prefix: str = "") -> str:
    """``full``, ``low_rank`` or ``mixture``: which cross net the tensor ``names`` belong to.

    >>> cross_kind(["crossnet.W_kernels.0", "crossnet.V_kernels.0", "crossnet.bias.0"], "crossnet.")
    'low_rank'
    """
    heads = {name[len(prefix):].split(".")[0] for name in names if name.startswith(prefix)}
    found = [kind for head, kind in KINDS.items() if head in heads]
    if len(found) != 1:
        raise ValueError(
            f"no DCNv2 cross net under {prefix!r}: expected one of {sorted(KINDS)} kernels, found {sorted(heads) or 'nothing'} "
            "(explain reads dcnv2 models only)"
        )
    return found[0]


def tensor_names(kind: str, prefix: str, layer: int) -> list[str]:
    """The tensors :func:`cross_weight` reads for ``kind`` at ``layer``."""
    heads = {"full": ["kernels"], "low_rank": ["W_kernels", "V_kernels"], "mixture": ["U_kernels", "C_kernels", "V_kernels"]}
    return [f"{prefix}{head}.{layer}" for head in heads[kind]]


def cross_weight(state: Mapping[str, torch.Tensor], prefix: str = "", layer: int = 0) -> torch.Tensor:
    """``W`` (``N x N``) of cross layer ``layer`` of the cross net in ``state``.

    >>> from torchrec.modules.crossnet import LowRankCrossNet
    >>> net = LowRankCrossNet(in_features=5, num_layers=2, low_rank=2)
    >>> w = cross_weight(net.state_dict(), layer=1)
    >>> x = torch.rand(5, dtype=torch.float64)
    >>> w.shape, bool(torch.allclose(w @ x, net.W_kernels[1].double() @ (net.V_kernels[1].double() @ x)))
    (torch.Size([5, 5]), True)
    """
    kind = cross_kind(list(state), prefix)
    names = tensor_names(kind, prefix, layer)
    missing = [n for n in names if n not in state]
    if missing:
        layers = sorted({int(n.rsplit(".", 1)[1]) for n in state if n.startswith(names[0].rsplit(".", 1)[0] + ".")})
        raise ValueError(f"cross layer {layer} not found ({missing[0]} missing); the model has layers {layers}")
    tensors = [state[n].detach().double() for n in names]
    if kind == "full":
        return tensors[0]
    if kind == "low_rank":
        return tensors[0] @ tensors[1]
    u, c, v = tensors
    return torch.einsum("knr,krs,ksm->nm", u, c, v) / u.shape[0]
