"""A stage's release: full collection once, then only what is new; a run's end gives frozen objects back."""

import gc
import weakref

from tasks.memory import release, thawed


class Node:
    """An object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_release_frees_cycles_made_after_an_earlier_release():
    with thawed():
        release()
        node = Node()
        alive = weakref.ref(node)
        del node
        release()
        assert alive() is None


def test_what_survives_a_release_is_frozen_until_the_run_ends():
    with thawed():
        release()
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_run_thaws_even_when_it_fails():
    try:
        with thawed():
            release()
            raise RuntimeError("a stage failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
