"""The process-wide connect gate: cancellation never leaks it, a slow connect holds it only
``hold_s``, a connect past its timeout raises and frees it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from syncmon.live.room import acquire_gate, gated


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for ``cond`` on the loop (not for a fixed time)."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


async def test_a_cancelled_wait_never_leaves_the_gate_held() -> None:
    gate = threading.Lock()
    gate.acquire()  # another room's connect holds it
    waiter = asyncio.create_task(acquire_gate(gate))
    for _ in range(3):  # let it try (and fail) to take the gate
        await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    await asyncio.sleep(0.1)  # a thread blocked in acquire() would take it about now
    assert not gate.locked()
    await asyncio.wait_for(acquire_gate(gate), timeout=1.0)
    gate.release()


async def test_a_slow_connect_holds_the_gate_only_hold_s() -> None:
    gate = threading.Lock()
    slow = asyncio.create_task(
        gated(lambda: asyncio.sleep(2.0, "slow"), gate, hold_s=0.2, timeout_s=5.0)
    )
    await until(gate.locked)  # the slow connect holds the gate
    t0 = time.monotonic()
    fast = await gated(lambda: asyncio.sleep(0.01, "fast"), gate, hold_s=0.2, timeout_s=5.0)
    waited = time.monotonic() - t0
    assert fast == "fast" and not slow.done()
    assert waited < 1.0, waited  # not the slow connect's 2 s
    assert await slow == "slow"
    assert not gate.locked()


async def test_a_connect_past_its_timeout_raises_and_frees_the_gate() -> None:
    gate = threading.Lock()
    with pytest.raises(asyncio.TimeoutError):
        await gated(lambda: asyncio.sleep(5.0), gate, hold_s=0.1, timeout_s=0.3)
    assert not gate.locked()


async def test_a_connect_cancelled_while_holding_the_gate_frees_it() -> None:
    gate = threading.Lock()
    task = asyncio.create_task(gated(lambda: asyncio.sleep(5.0), gate, hold_s=2.0, timeout_s=9))
    await until(gate.locked)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not gate.locked()
