"""``FairSlots``, the gate in front of the photo library's database searches: at most N holders, handed out in
arrival order (a slot freed while others wait goes to the oldest waiter, never to a newcomer)."""
from __future__ import annotations

import threading
import time

import pytest

from ernievil2torch.apps.serve import fair_slots
from ernievil2torch.apps.serve.fair_slots import FairSlots
from ernievil2torch.errors import InputError


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def test_waiters_are_served_in_arrival_order_and_a_newcomer_cannot_overtake_them():
    slots, order = FairSlots(1), []
    slots.acquire()

    def take(name: str) -> None:
        with slots:
            order.append(name)

    waiters = []
    for i, name in enumerate("ABCDE"):
        waiters.append(threading.Thread(target=take, args=(name,)))
        waiters[-1].start()
        wait_for(lambda: slots.waiting == i + 1)  # each is queued before the next arrives
    slots.release()  # handed straight to A: the slot is not free for the line below
    take("newcomer")  # a semaphore would let this thread in first (its value is 1 right after the release)
    for thread in waiters:
        thread.join(10)
    assert order == ["A", "B", "C", "D", "E", "newcomer"]
    slots.acquire()  # every slot came back
    slots.release()


def test_no_more_than_count_hold_a_slot_at_once():
    slots, inside, most, lock = FairSlots(3), [0], [0], threading.Lock()

    def work() -> None:
        with slots:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 3 and inside[0] == 0 and slots.waiting == 0


def test_a_waiter_interrupted_while_waiting_leaves_no_slot_behind(monkeypatch):
    class Interrupted(Exception):
        pass

    class InterruptedEvent(threading.Event):
        def wait(self, timeout=None):
            raise Interrupted()

    slots = FairSlots(1)
    slots.acquire()
    monkeypatch.setattr(fair_slots.threading, "Event", InterruptedEvent)
    with pytest.raises(Interrupted):
        slots.acquire()
    monkeypatch.undo()
    assert slots.waiting == 0  # it left the queue ...
    slots.release()
    slots.acquire()  # ... and the slot freed above is free, not handed to the one that left
    slots.release()


def test_counts_are_checked():
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(InputError, match="positive"):
            FairSlots(bad)
    with pytest.raises(RuntimeError, match="released more often"):
        FairSlots(1).release()
