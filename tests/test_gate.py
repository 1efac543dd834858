"""The probe threads' gate: held for Python work, open while a thread blocks."""

from __future__ import annotations

import threading

from monitor.gate import Gate


def test_a_thread_blocking_inside_io_lets_another_thread_through() -> None:
    gate = Gate()
    inside_io = threading.Event()
    other_ran = threading.Event()
    release = threading.Event()

    def blocker() -> None:
        with gate.held(), gate.io():
            inside_io.set()
            release.wait(10)

    def other() -> None:
        with gate.held():
            other_ran.set()

    t1 = threading.Thread(target=blocker)
    t1.start()
    assert inside_io.wait(10)
    t2 = threading.Thread(target=other)
    t2.start()
    # The first thread is blocked inside io(): the gate is open, so the second gets in.
    assert other_ran.wait(10)
    release.set()
    t1.join(10)
    t2.join(10)


def test_a_thread_holding_the_gate_keeps_others_out_until_it_leaves() -> None:
    gate = Gate()
    entered = threading.Event()
    leave = threading.Event()
    other_ran = threading.Event()

    def holder() -> None:
        with gate.held():
            entered.set()
            leave.wait(10)

    def other() -> None:
        with gate.held():
            other_ran.set()

    t1 = threading.Thread(target=holder)
    t1.start()
    assert entered.wait(10)
    t2 = threading.Thread(target=other)
    t2.start()
    assert not other_ran.wait(0.2)
    leave.set()
    assert other_ran.wait(10)
    t1.join(10)
    t2.join(10)


def test_io_is_a_no_op_in_a_thread_without_the_gate() -> None:
    gate = Gate()
    with gate.io():  # check and /probe threads never took it: nothing to open
        pass
    with gate.held(), gate.io():  # and the gate is still free and whole afterwards
        pass
