"""A PyTorch model as *code*: the source that rebuilds its structure, never a pickle.

A plan carries the model definition the owner reviews (``nn.Sequential(
nn.Linear(12, 32), nn.ReLU(), ...)``) and its weights travel as tensors, so the
worker never unpickles anything the scientist sent. :func:`model_source`
writes that source for an ``nn.Sequential`` of the layer types listed in
:data:`LAYERS` (nested Sequentials too), and checks that the rebuilt model has
the same parameter names and shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidQuery


def _linear(m: Any) -> str:
    return f"nn.Linear({m.in_features}, {m.out_features}, bias={m.bias is not None})"


def _dropout(m: Any) -> str:
    return f"nn.{type(m).__name__}(p={float(m.p)!r})"


def _flatten(m: Any) -> str:
    return f"nn.Flatten({int(m.start_dim)}, {int(m.end_dim)})"


def _dim(m: Any) -> str:
    return f"nn.{type(m).__name__}(dim={m.dim!r})"


def _leaky(m: Any) -> str:
    return f"nn.LeakyReLU({float(m.negative_slope)!r})"


def _layernorm(m: Any) -> str:
    return (f"nn.LayerNorm({list(m.normalized_shape)!r}, eps={float(m.eps)!r}, "
            f"elementwise_affine={bool(m.elementwise_affine)})")


def _groupnorm(m: Any) -> str:
    return (f"nn.GroupNorm({int(m.num_groups)}, {int(m.num_channels)}, eps={float(m.eps)!r}, "
            f"affine={bool(m.affine)})")


def _conv2d(m: Any) -> str:
    return (f"nn.Conv2d({m.in_channels}, {m.out_channels}, {tuple(m.kernel_size)!r}, "
            f"stride={tuple(m.stride)!r}, padding={tuple(m.padding)!r}, "
            f"bias={m.bias is not None})")


def _plain(m: Any) -> str:
    return f"nn.{type(m).__name__}()"


#: Layer types a plan's model may use, and how each is written as code. Batch
#: norm is left out on purpose: Opacus's DP-SGD cannot train it (per-sample
#: gradients mix samples); use GroupNorm or LayerNorm.
LAYERS: dict[str, Callable[[Any], str]] = {
    "Linear": _linear, "ReLU": _plain, "Tanh": _plain, "Sigmoid": _plain, "GELU": _plain,
    "ELU": _plain, "SiLU": _plain, "Identity": _plain, "LeakyReLU": _leaky,
    "Dropout": _dropout, "Flatten": _flatten, "Softmax": _dim, "LogSoftmax": _dim,
    "LayerNorm": _layernorm, "GroupNorm": _groupnorm, "Conv2d": _conv2d,
}


def model_source(model: Any, indent: str = "    ") -> str:
    """The Python expression that rebuilds ``model``'s structure (``nn.Sequential(...)``).

    Parameters
    ----------
    model : torch.nn.Sequential
        The model; its layers must be among :data:`LAYERS` (or nested Sequentials).
    indent : str
        Indentation of each layer line.

    Returns
    -------
    str
        Source of one expression using ``nn`` (``from torch import nn``).

    Raises
    ------
    InvalidQuery
        The model is not a Sequential of supported layers, or the rebuilt model's
        parameters differ from the original's.
    """
    src = _sequential(model, indent, indent)
    rebuilt = build_model(src)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        raise InvalidQuery("the model's code does not rebuild its parameters "
                           f"(expected {want}, rebuilt {got})")
    return src


def _sequential(model: Any, indent: str, step: str) -> str:
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise InvalidQuery(f"an FL model must be an nn.Sequential, not {type(model).__name__} "
                           "(its structure is sent as code, never pickled)")
    lines = []
    for child in model.children():
        name = type(child).__name__
        if isinstance(child, nn.Sequential):
            lines.append(_sequential(child, indent + step, step))
        elif name in LAYERS and type(child).__module__.startswith("torch.nn"):
            lines.append(LAYERS[name](child))
        else:
            raise InvalidQuery(f"layer {name} is not supported in FL plans; supported: "
                               + ", ".join(sorted(LAYERS)) + " and nested nn.Sequential")
    inner = "".join(f"\n{indent}{line}," for line in lines)
    return f"nn.Sequential({inner}\n{indent[:-len(step)] if step else ''})"


def build_model(source: str) -> Any:
    """Evaluate a :func:`model_source` expression (the scientist's own, trusted, code)."""
    from torch import nn

    return eval(source, {"nn": nn, "__builtins__": {}})  # noqa: S307 - our own generated code


def param_shapes(model: Any) -> dict[str, list[int]]:
    """Each state_dict entry's shape (what the plan's output policy declares)."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}
