"""Everything that draws: corpus views and players (``corpus``), unlearning results (``results``).

Functions return matplotlib figures or IPython display objects: a chapter cell stays one call.
"""

from .corpus import *  # noqa: F403
from .corpus import __all__ as _corpus_all
from .results import *  # noqa: F403
from .results import __all__ as _results_all

__all__ = [*_corpus_all, *_results_all]
