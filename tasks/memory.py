"""Memory a stage gives back when it is done with a model: the process runs every stage of a job, so what
one stage leaves allocated is the floor of the next one's peak."""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def release() -> None:
    """Free model memory once the caller dropped its references: collect, empty the CUDA cache, and
    hand freed heap back to the OS (glibc keeps it otherwise, so RSS would not come down).

    What survives the collection (the imported libraries, mostly) is frozen out of later ones: a full
    collection walks every tracked object, 0.16-0.23 s here once torch and Prefect are in (280,000-350,000
    objects), five times a run and twice in asr. Frozen, each later one walks only what came since. `thawed`
    gives the frozen objects back to the collector when a run ends.
    """
    gc.collect()
    gc.freeze()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    trim_heap()


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim), also those between live blocks.

    The Whisper decoder calls it after each batch: the buffers a batch freed, kept by glibc and scattered
    between live blocks, otherwise lie under the next batch's peak (in the pipeline on the 10-minute bench
    film the peak came down 60 to 110 MB; decoding took 34.8 s with the trim and 34.7 s without).
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@contextmanager
def thawed() -> Iterator[None]:
    """A block (a whole run) after which what `release` froze is collectable again: a long-lived process (a
    served deployment) must not keep a finished run's garbage that was alive when a stage froze it."""
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def loaded(factory: Callable[[], Any]) -> Iterator[list[Any]]:
    """Hold a model for a block and release it afterwards, even when the block fails.

    The model is yielded inside a list so the caller holds no reference of its own that
    would outlive the block.
    """
    holder = [factory()]
    try:
        yield holder
    finally:
        holder.clear()
        release()
