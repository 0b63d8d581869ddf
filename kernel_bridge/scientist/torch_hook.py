"""PyTorch in the PySyft spirit: ``tensor.send(alice)``, ``model.send(alice)``, ``ptr.get()``.

``kb.hook_torch()`` adds ``send`` to ``torch.Tensor`` and ``torch.nn.Module``, so
PySyft's classic first example runs verbatim::

    import torch, kernel_bridge as kb
    kb.hook_torch()
    x = torch.tensor([1, 2, 3, 4.]).send(alice)   # a Pointer to a clean tensor on alice
    y = x + x
    y.get()                                        # tensor([2., 4., 6., 8.])

A model is sent as what the FL plans use: its structure as *code*
(:mod:`kernel_bridge.fl.model_code`) and its weights as tensors, never a
pickle; :meth:`ModelPointer.get` rebuilds it locally. Values you send are
clean, so you may always get them back; a model trained on private data comes
back only through a plan (see :mod:`kernel_bridge.scientist.fl`).
"""

from __future__ import annotations

from typing import Any

from ..fl.model_code import build_model, model_source
from .pointer import Pointer


class ModelPointer:
    """A model placed on a worker: its structure (code) and a pointer to its weights.

    Attributes
    ----------
    source : str
        The model's structure as code (``nn.Sequential(...)``).
    state : Pointer
        The remote ``state_dict`` (a dict of tensors).
    """

    def __init__(self, source: str, state: Pointer) -> None:
        self.source = source
        self.state = state

    @property
    def location(self) -> Any:
        """The worker holding the weights."""
        return self.state.worker

    def __repr__(self) -> str:
        return f"<ModelPointer on {getattr(self.location, 'name', '?')}: {self.state.id}>"

    def get(self) -> Any:
        """The model, rebuilt locally from its code and the remote weights."""
        import torch

        model = build_model(self.source)
        state = self.state.get()
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return model

    async def aget(self) -> Any:
        """:meth:`get` from an asyncio program."""
        import torch

        model = build_model(self.source)
        state = await self.state._aget()
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        return model


def send_model(model: Any, worker: Any) -> ModelPointer:
    """Place ``model`` on ``worker`` (structure as code, weights as tensors)."""
    source = model_source(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ModelPointer(source, worker.send(state))


def _tensor_send(self: Any, worker: Any) -> Pointer:
    """``tensor.send(worker)``: a pointer to a copy of the tensor on the worker."""
    return worker.send(self)  # type: ignore[no-any-return]


def hook_torch() -> None:
    """Give ``torch.Tensor`` and ``torch.nn.Module`` a ``send(worker)`` method (idempotent)."""
    import torch

    torch.Tensor.send = _tensor_send  # type: ignore[attr-defined]
    torch.nn.Module.send = send_model  # type: ignore[attr-defined]
