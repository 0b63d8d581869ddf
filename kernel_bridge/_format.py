"""Small formatters shared by the owner side, the scientist side, the Lab, the
widgets and the CLI, so that a size or a budget reads the same everywhere."""

from __future__ import annotations


def human_size(n: int) -> str:
    """A byte count in binary units: ``"512 B"``, ``"1.5 KiB"``, ... up to GiB.

    Parameters
    ----------
    n : int
        A number of bytes.

    Returns
    -------
    str
        Bytes with no decimals, KiB, MiB and GiB with one.
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def format_epsilon(x: float) -> str:
    """ε (or δ) as syftlab's UI shows it everywhere: two decimals (``0.70``, ``10.00``).

    Parameters
    ----------
    x : float
        A privacy parameter.

    Returns
    -------
    str
        ``x`` with two decimals.
    """
    return f"{float(x):.2f}"
