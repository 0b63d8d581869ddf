"""The extension as installed in this environment: JupyterLab and jupyter_server see it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args: str) -> str:
    out = subprocess.run([str(BIN / "jupyter"), *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return ANSI.sub("", out.stdout + out.stderr)


def test_labextension_is_installed_and_ok() -> None:
    out = jupyter("labextension", "list")
    assert re.search(r"syftlab v0\.1\.0 enabled\s+OK", out), out


def test_server_extension_is_enabled_and_ok() -> None:
    out = jupyter("server", "extension", "list")
    assert re.search(r"kernel_bridge\.lab enabled", out), out
    assert re.search(r"kernel_bridge\.lab\s+OK", out), out


def test_installed_bundle_is_this_build() -> None:
    import kernel_bridge.lab as lab

    spec = lab._jupyter_labextension_paths()[0]
    built = Path(lab.__file__).parent / spec["src"]
    meta = json.loads((built / "package.json").read_text())
    assert meta["name"] == spec["dest"] == "syftlab"
    entry = meta["jupyterlab"]["_build"]["load"]
    assert (built / entry).is_file()
    # Nothing is fetched at run time: no CDN URLs in the bundle.
    for js in (built / "static").glob("*.js"):
        assert not re.search(r"https?://(cdn|unpkg|jsdelivr)", js.read_text()), js
