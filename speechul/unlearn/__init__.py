"""Unlearning methods, looked up by name, run through one front door.

>>> out = su.unlearn.run("scrub", original, split, seed=0, epochs=3)   # -> Unlearned
>>> su.unlearn.defaults("scrub")                                        # its hyper-parameters
>>> cfg = su.unlearn.config("scrub", epochs=3)   # the same, as a frozen dataclass value

``core`` holds the registry and :func:`run`; ``methods`` the methods, one function each
(read them: each is short); ``_shared`` what they share (teachers, KL, masks, Fisher).
Add a method with ``@su.unlearn.register`` on a function ``fn(model, forget, retain, *, ...)``.
"""

from . import methods
from .core import INJECTED, METHODS, Unlearned, config, defaults, register, run
from .methods import *  # noqa: F403

__all__ = ["METHODS", "INJECTED", "Unlearned", "register", "config", "defaults", "run", "methods",
           *methods.__all__]
