"""A reader's real-corpus flow, end to end on fixture trees: the chapters run with a parameter file.

The Colab flow for Speech Commands: an EMPTY cache, the corpus downloaded from a (local, fake)
server as ``su.data.load(..., download=True)`` fetches it (checked, extracted, archive deleted),
then every chapter executed by papermill with ``book/params/speechcommands.yaml`` at tiny sizes
(those with a speaker task on per-speaker parts; chapter 1, about the embedded corpus, is
skipped with the file's reason). The speaker-task flow: every chapter that
``book/params/librispeech.yaml`` runs (``TASK(S) = speaker``), on a LibriSpeech tree.

The trees are tones in the real layouts, not speech, so the chapters' claims (statements about
the embedded corpus at its default size) are reported, not enforced (``SPEECHUL_CLAIMS=report``):
what is tested is that every cell of every chapter runs on the real loaders' layouts, parts and
labels with the file's parameters. The download happens in this process because the kernel
cannot be pointed at the fake server; the chapters then find the corpus where a reader's
download put it (``<cache>/datasets``).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scriptload import load_script
from test_datasets import SR, WORDS, _tone, make_librispeech

from speechul import chapter_setting, data, datasets

runner = load_script("run_chapters")
ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "book" / "params"
SPEAKERS = tuple(f"{i:x}a1b2c3d" for i in range(6))  # two in the official val / test lists
CLIPS = 2  # per speaker and word: each speaker has clips in every per-speaker part
# On top of each chapter's CI profile, fewer epochs and draws: the tones are learned at once, and
# this is about running (03_methods, which has no METHODS, runs them all on the tiny tree).
TINY = {"SIZE": "tiny", "EPOCHS": 3, "SEEDS": [0], "SEED": 0, "N_VOICES": 2,
        "METHODS": ["finetune", "ssd"], "N_PERMUTATIONS": 100, "FRACTIONS": [0.1],
        "TUNING_SEEDS": [100], "TABLE_SEEDS": [0], "RELEARN_CLIPS": 2}
# Chapter 11 tunes within a tenth of Retrain's work: with 3 epochs no variant fits (it says so).
# Chapter 8's shadows train on as many clips as the target: on LibriSpeech's 80/10/10 parts that
# is 8 in 9 of the pool (train + test), and only with 8 shadows is every clip OUT for one of them.
LONGER = {"11_tuning": {"EPOCHS": 20}, "08_auditing": {"N_SHADOWS": 8}}
PER_SPEAKER = {"version": "v0.01", "words": "superb", "parts": "per_speaker"}
CHAPTERS = [c.stem for c in runner.notebooks.chapters(ROOT)]
SKIPPED = {"speechcommands": ["01_data"]}  # what the file skips, each with its reason
RUNS = [stem for stem in CHAPTERS if stem not in SKIPPED["speechcommands"]]


def make_speech_commands(root: Path) -> Path:
    """The archive's layout (words at the top, the two lists, noise) with CLIPS per speaker."""
    lists: dict[str, list[str]] = {SPEAKERS[-2]: [], SPEAKERS[-1]: []}
    for w, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for s, speaker in enumerate(SPEAKERS):
            for n in range(CLIPS):
                rel = f"{word}/{speaker}_nohash_{n}.wav"
                sf.write(root / rel, _tone(1.0, 200 + 60 * w + 7 * s, seed=w * 100 + s * 10 + n),
                         SR)
                lists.get(speaker, []).append(rel)
    (root / "validation_list.txt").write_text("\n".join(lists[SPEAKERS[-2]]) + "\n")
    (root / "testing_list.txt").write_text("\n".join(lists[SPEAKERS[-1]]) + "\n")
    (root / "_background_noise_").mkdir()
    noise = np.random.default_rng(7).normal(0, 0.1, 20 * SR).astype(np.float32)
    sf.write(root / "_background_noise_" / "white_noise.wav", noise, SR)
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL pattern, SHA-256) of speech_commands_v0.01.tar.gz served on 127.0.0.1."""
    served = tmp_path_factory.mktemp("served")
    tree = make_speech_commands(tmp_path_factory.mktemp("sc-tree"))
    archive = served / "speech_commands_v0.01.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=".")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = functools.partial(_Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/speech_commands_{{}}.tar.gz", sha
    httpd.shutdown()
    httpd.server_close()


def _params(name: str, only: list[str]) -> dict[str, dict]:
    """The file's parameters for the chosen chapters: each chapter's CI profile, the file's
    values, then the tiny sizes on top."""
    chapters = runner.notebooks.chapters(ROOT)
    table = runner.load_params(str(PARAMS / f"{name}.yaml"), chapters)
    ci = runner.load_params("ci", chapters)
    return ({stem: {**ci[stem], **p, **TINY, **LONGER.get(stem, {})} for stem, p in table.items()},
            runner.select(chapters, only))


def _every_part(dataset: str, options: dict) -> dict:
    """A KEYWORD with clips in every part of the small tree (chapter 5's default, "yes", may have
    no test clip among 144; on the real corpus it has many): what the chapter's check tells a
    reader to pick. VOICE stays None: the chapter picks a speaker with clips in every part."""
    names, counts = chapter_setting._counts(dataset, options, "tiny", "keyword")
    return {"KEYWORD": next(n for i, n in enumerate(names) if not n.startswith("_")
                            and min(counts[(i, p)] for p in range(3)) > 0)}


@pytest.fixture(scope="module")
def colab_run(fake_server, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Download into an empty cache, then every chapter with speechcommands.yaml: outcomes."""
    cache = tmp_path_factory.mktemp("empty-cache")
    assert not any(cache.iterdir())
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SPEECHUL_DATA", raising=False)
        mp.setenv("SPEECHUL_CACHE", str(cache))
        mp.setenv("SPEECHUL_CLAIMS", "report")
        mp.setattr(datasets, "SC_URL", fake_server[0])
        mp.setitem(datasets.SC_SHA256, "v0.01", fake_server[1])
        corpus = data.load("speechcommands", task="keyword", size="tiny", download=True,
                           parts="per_speaker", device="cpu")
        assert len(corpus) > 0
        assert not list((cache / "datasets").rglob("*.tar.gz")), "the archive was deleted"
        params, chosen = _params("speechcommands", CHAPTERS)
        params["05_class_unlearning"].update(_every_part("speechcommands", PER_SPEAKER))
        outcomes = runner.run_all(chosen, cache / "runs", params, quiet=True)
    return {o.chapter: o for o in outcomes}


@pytest.mark.book
@pytest.mark.parametrize("stem", RUNS)
def test_colab_flow_runs_every_chapter_with_speechcommands_yaml(colab_run, stem):
    outcome = colab_run[stem]
    assert outcome.status == "ok", f"{stem} failed: {outcome.error}\n{outcome.notebook}"
    assert outcome.parameters["DATASET"] == "speechcommands"


@pytest.mark.book
def test_the_colab_flow_skips_only_what_the_file_skips(colab_run):
    skipped = sorted(stem for stem, o in colab_run.items() if o.status != "ok")
    assert skipped == SKIPPED["speechcommands"]
    assert all(colab_run[stem].status == "skipped" for stem in skipped)


@pytest.mark.book
def test_speaker_chapters_run_with_librispeech_yaml(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_librispeech(root, speakers=(19, 26, 103, 125, 150), utterances=12)
    monkeypatch.setenv("SPEECHUL_DATA", str(root))  # where the reader's download put it
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPEECHUL_CLAIMS", "report")
    params, chosen = _params("librispeech", CHAPTERS)
    outcomes = runner.run_all(chosen, tmp_path / "runs", params, quiet=True)
    ran = [o for o in outcomes if o.status != "skipped"]
    assert [o.chapter for o in ran] == [s for s in CHAPTERS if "skip" not in params[s]]
    assert len(ran) >= 4
    for outcome in ran:
        assert outcome.status == "ok", f"{outcome.chapter} failed: {outcome.error}"
        assert outcome.parameters["DATASET"] == "librispeech"
        tasks = outcome.parameters.get("TASKS") or [outcome.parameters["TASK"]]
        assert tasks == ["speaker"], outcome.chapter


@pytest.mark.book
def test_chapter_4_runs_with_a_frozen_encoder(tmp_path, monkeypatch):
    """ARCH picks the model in every chapter's recipe: chapter 4's grid with a frozen encoder's
    cached embeddings and a linear head (the tiny random wav2vec 2.0 stands in for
    ``ARCH = "wav2vec2"``, whose weights cannot be downloaded here)."""
    monkeypatch.setenv("SPEECHUL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SPEECHUL_CLAIMS", "report")
    chapters = runner.notebooks.chapters(ROOT)
    params = {"04_sample_unlearning": {**TINY, "ARCH": "tiny", "TASKS": ["keyword"],
                                       "METHODS": ["finetune", "eu_k"]}}
    [outcome] = runner.run_all(runner.select(chapters, ["04"]), tmp_path / "runs", params,
                               quiet=True)
    assert outcome.status == "ok", f"failed: {outcome.error}\n{outcome.notebook}"
    assert list((tmp_path / "cache" / "features").glob("encoder-*.pt")), "embeddings cached"
