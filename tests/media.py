"""Test media come from the same generator as the demo film (flows/sample_film.py)."""

from flows.sample_film import (  # noqa: F401
    RATE,
    VOICES,
    Turn,
    dialogue,
    make_film,
    music,
    noise,
    require,
    speak,
    trim,
    write_wav,
)
