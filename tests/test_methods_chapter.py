"""The methods chapter (``book/03_methods.md``): it shows every registered method, and its
exercises' reference solutions, written from the equations, are the package's methods.

Each coded solution is run on the tiny corpus beside the package's method with the same seed
(same batches, same random draws) and must give the same weights and batch-norm statistics; a
deliberately wrong solution (NegGrad+ with the sign of its forget term flipped) must not, so the
comparison can fail. Runs in seconds on 2 CPU cores, without papermill.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scriptload import load_script

import speechul as su
import speechul.unlearn  # noqa: F401  (registers the methods)
from speechul.unlearn import _shared as S

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "03_methods.md"
notebooks = load_script("book_notebooks", ROOT / "scripts" / "notebooks.py")

# exercise label -> (the package's method, the function its solution defines)
METHODS = {"ex-methods-neggrad": ("neggrad_plus", "my_neggrad_plus"),
           "ex-methods-scrub": ("scrub", "my_scrub"),
           "ex-methods-l1": ("l1_sparse", "my_l1_sparse"),
           "ex-methods-ssd": ("ssd", "my_ssd"),
           "ex-methods-euk": ("eu_k", "my_eu_k")}
TOLERANCE = 1e-5  # float32 weights; the solutions make the package's calls in the same order


def _solution(label: str) -> str:
    """The ``~~~python`` code of the solution of exercise ``label`` (without the check)."""
    for name, argument, _, _, body in notebooks.directives(CHAPTER.read_text()):
        if name == "solution" and argument == label:
            return "\n".join(notebooks.FENCED.findall(body))
    raise KeyError(f"{CHAPTER.name} has no solution for {label}")


def _defined(code: str, name: str):
    """Execute a solution's code and return the function ``name`` it defines."""
    namespace = {"su": su, "S": S, "torch": torch, "F": F}
    exec(compile(code, f"{CHAPTER.name}:{name}", "exec"), namespace)
    return namespace[name]


@pytest.fixture
def registry():
    """Methods registered during a test are removed after it (METHODS is process-wide)."""
    before = dict(su.unlearn.METHODS)
    yield
    su.unlearn.METHODS.clear()
    su.unlearn.METHODS.update(before)


def _largest_difference(name, mine, original, request) -> float:
    """Largest absolute difference between the package's and ``mine``'s unlearned models."""
    ref = su.unlearn.run(name, original, request, seed=0)
    su.unlearn.register(mine)
    out = su.unlearn.run(mine.__name__, original, request, seed=0)
    pairs = zip(ref.model.state_dict().values(), out.model.state_dict().values(), strict=True)
    return max((a - b).abs().max().item() for a, b in pairs if a.is_floating_point())


@pytest.fixture(scope="module")
def sample(tiny_corpus):
    return su.data.forget_split(tiny_corpus, "sample", fraction=0.1, seed=0)


def test_the_chapter_shows_every_registered_method():
    text = CHAPTER.read_text()
    shown = set(re.findall(r"^:pyobject: (\w+)$", text, re.M))
    built_in = {n for n, fn in su.unlearn.METHODS.items()
                if fn.__module__ == "speechul.unlearn.methods"}
    assert built_in <= shown, f"methods without their code on the page: {built_in - shown}"
    for name in built_in:  # the :pyobject: must name a function of the module it includes
        assert re.search(rf"^def {name}\(", (ROOT / "speechul/unlearn/methods.py").read_text(),
                         re.M)


@pytest.mark.parametrize("label", sorted(METHODS))
def test_solution_is_the_package_method(label, tiny_original, sample, registry):
    name, function = METHODS[label]
    mine = _defined(_solution(label), function)
    assert _largest_difference(name, mine, tiny_original, sample) < TOLERANCE


def test_ssd_solution_on_a_class_request(tiny_original, tiny_corpus, registry):
    klass = su.data.forget_split(tiny_corpus, "class", classes=[tiny_corpus.classes[0]])
    mine = _defined(_solution("ex-methods-ssd"), "my_ssd")
    assert _largest_difference("ssd", mine, tiny_original, klass) < TOLERANCE


def test_salun_mask_solution_is_the_package_mask(tiny_original, tiny_corpus, sample):
    mine = _defined(_solution("ex-methods-salun"), "my_saliency_mask")
    stream = su.data.Batches(tiny_corpus.x, tiny_corpus.y, sample.forget, 32, seed=0)
    for fraction in (0.1, 0.5):
        a = mine(copy.deepcopy(tiny_original.model), stream, fraction)
        b = S.saliency_mask(copy.deepcopy(tiny_original.model), stream, fraction)
        agree = sum((a[n] == b[n]).sum().item() for n in b) / sum(m.numel() for m in b.values())
        assert agree > 0.999, (fraction, agree)


def test_a_wrong_solution_is_caught(tiny_original, sample, registry):
    code = _solution("ex-methods-neggrad")
    wrong = code.replace("alpha * keep - (1 - alpha) * drop", "alpha * keep + (1 - alpha) * drop")
    assert wrong != code, "the solution's loss line changed: update this test"
    mine = _defined(wrong, "my_neggrad_plus")
    assert _largest_difference("neggrad_plus", mine, tiny_original, sample) > TOLERANCE
