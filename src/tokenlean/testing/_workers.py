"""Running a check's workers in threads at once (the contract suites' and the tests')."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["run_workers"]


def run_workers(work: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``work(0)`` … ``work(count - 1)`` in threads started together; wait for all of them
    and return what they raised (empty when none failed).

    Example:
        >>> seen = []
        >>> run_workers(seen.append, 3), sorted(seen)
        ([], [0, 1, 2])
    """
    errors: list[BaseException] = []

    def guarded(worker: int) -> None:
        try:
            work(worker)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(w,)) for w in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
