"""The client's concurrent calls to the parties: every failure is retrieved, none is logged."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from kernel_bridge.scientist.smpc import _Parties


class _Core:
    name = "x"


def test_a_call_that_fails_while_being_cancelled_is_not_logged_as_never_retrieved() -> None:
    """The first party refuses; the second's refusal lands as it is cancelled (its reply had
    arrived). Its error must be retrieved, or asyncio prints a traceback into the notebook."""
    unhandled: list[dict[str, Any]] = []

    async def first() -> dict[str, Any]:
        raise PermissionError("alice refuses")

    async def second() -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise PermissionError("bob refuses too") from None
        return {}

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: unhandled.append(ctx))
        parties = _Parties.__new__(_Parties)
        with pytest.raises(PermissionError, match="alice"):
            await parties.run_all([first(), second()], cid=None)
        await asyncio.sleep(0.05)  # the cancelled call ends with its own error
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    assert not unhandled, unhandled
