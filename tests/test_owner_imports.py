"""A worker starts without the heavy libraries only some services need.

torch (~1.5 s, ~180 MB) is imported on the first SMPC op or FL run, scikit-learn
never (``opendp.prelude`` would pull it in): ten workers on one machine start in
seconds and stay small (``python -m benchmarks --only fl``).
"""

from __future__ import annotations

import subprocess
import sys

from kernel_bridge.owner import smpc_values
from kernel_bridge.smpc import fixed


def test_the_worker_imports_neither_torch_nor_sklearn_at_start() -> None:
    code = ("import sys, kernel_bridge.cli, kernel_bridge.owner.server; "
            "print(sorted(m for m in ('torch', 'sklearn', 'tenseal', 'opacus') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_service_range_check_uses_the_protocol_frac_bits() -> None:
    assert smpc_values.FRAC_BITS == fixed.FRAC_BITS
