"""Futures released and submitted again, from several threads: every one still completes."""

from __future__ import annotations

import threading

from tests.engine.helpers import inc


def test_resubmitting_a_key_as_its_last_future_dies(client) -> None:
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(150):
                future = client.submit(inc, 1)
                assert future.result(timeout=10) == 2
                del future
        except BaseException as error:  # reported below, with the thread's failure
            errors.append(error)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
