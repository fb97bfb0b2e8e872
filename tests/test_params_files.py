"""The reader settings of ``book/params/``: each names only parameters its chapters declare, and
its ``skip:`` list is exactly what the chapters' own checks refuse.

For every parameter file and chapter, the chapter's parameters cell and the check cell right
after it are executed (no training, no features) with the file's values, on fixture trees of the
real layouts under ``$SPEECHUL_DATA``: a chapter the file runs must pass its check, a chapter
it skips must be refused by it (so a skip reason is never a way to hide a failure).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from scriptload import load_script
from test_datasets import make_librispeech, make_speech_commands, make_voxceleb1

from speechul import chapter_setting

runner = load_script("run_chapters")
ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = runner.notebooks.chapters(ROOT)
FILES = sorted((ROOT / "book" / "params").glob("*.yaml"))
SETTINGS = FILES  # ci.yaml too: the embedded corpus at CI sizes, where every chapter runs


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_speech_commands(root)
    make_librispeech(root)
    make_voxceleb1(root)
    return root


def _cells(chapter: Path) -> tuple[str, str]:
    """The source of the parameters cell and of the cell right after it."""
    cells = [c for c in runner.notebooks.notebook(chapter).cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    return cells[at].source, cells[at + 1].source


def _fixture_classes(names: dict) -> None:
    """The word and speaker a chapter forgets, replaced by ones the small fixture tree has in
    every part (what the check's message tells a reader to do); a real corpus has thousands."""
    if names.get("DATASET") == "embedded":
        return
    options = {k: v for k, v in names.get("DATA_OPTIONS", {}).items() if k != "features"}
    for task, params in (("keyword", ("KEYWORD",)), ("speaker", ("VOICE",))):
        if task not in chapter_setting.CORPUS_TASKS[names["DATASET"]]:
            continue
        labels, counts = chapter_setting._counts(names["DATASET"], options, "tiny", task)
        usable = next((n for i, n in enumerate(labels) if not n.startswith("_")
                       and min(counts[(i, p)] for p in range(3)) > 0), None)
        if usable is None:  # official parts: no speaker has clips in every part
            continue
        for param in params:
            if param in names:
                names[param] = usable
        if names.get("TASK") == task and "FORGET_CLASS" in names:
            names["FORGET_CLASS"] = usable


def test_the_setting_files_exist():
    assert {f.stem for f in SETTINGS} >= {"speechcommands", "librispeech", "voxceleb1", "paper"}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_file_sets_only_what_its_chapters_declare(path):
    """A chapter's block names only its parameters; the ``default:`` block, which serves every
    chapter, names parameters that some chapter declares (a typo would be ignored silently)."""
    table = yaml.safe_load(path.read_text()) or {}
    declared = {}
    for chapter in CHAPTERS:
        names: dict = {}
        exec(_cells(chapter)[0], names)  # noqa: S102 - the book's own parameters cell
        declared[chapter.stem] = {n for n in names if n.isupper()}
    for stem, block in table.items():
        known = set().union(*declared.values()) if stem == "default" else declared[stem]
        unknown = sorted(set(block or {}) - known - {runner.SKIP, "ci"})
        assert not unknown, f"{path.name}: {stem} sets {unknown}, which no chapter there declares"


@pytest.mark.parametrize("path", SETTINGS, ids=[f.stem for f in SETTINGS])
def test_skips_are_exactly_what_the_chapters_refuse(path, data_root, monkeypatch):
    monkeypatch.setenv("SPEECHUL_DATA", str(data_root))
    params = runner.load_params(str(path), CHAPTERS)
    for chapter in CHAPTERS:
        given = dict(params[chapter.stem])
        skip = given.pop(runner.SKIP, None)
        declared, check = _cells(chapter)
        names: dict = {}
        exec(declared, names)  # noqa: S102
        assert "chapter_setting.check(" in check, f"{chapter.stem}: no check after parameters"
        names.update({k: v for k, v in given.items() if k in names})
        names["SIZE"] = "tiny"  # the fixture trees are small; the check reads labels only
        _fixture_classes(names)
        if skip:
            with pytest.raises(chapter_setting.SettingRefused):
                exec(check, names)  # noqa: S102
        else:
            try:
                exec(check, names)  # noqa: S102
            except chapter_setting.SettingRefused as err:
                pytest.fail(f"{path.name} runs {chapter.stem}, whose check refuses it: {err}")


def test_a_skipped_chapter_is_reported_not_run(tmp_path, capsys):
    table = tmp_path / "setting.yaml"
    table.write_text("01_data: {skip: 'no synthesis on a real corpus'}\n")
    assert runner.main(["--params", str(table), "--out", str(tmp_path / "out"), "--only", "01",
                        "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "(no synthesis on a real corpus)" in out
    assert "0/0 chapters ran" in out and not (tmp_path / "out" / "01_data.ipynb").exists()
    # a file's blocks for chapters not chosen with --only are not "unknown chapters"
    table.write_text("01_data: {skip: 'no synthesis'}\n02_training: {SIZE: tiny}\n")
    assert runner.main(["--params", str(table), "--out", str(tmp_path / "out"), "--only", "01",
                        "--quiet"]) == 0


def test_a_setting_is_named_by_its_file_stem():
    named = runner.load_params("speechcommands", CHAPTERS)
    assert named == runner.load_params(str(ROOT / "book/params/speechcommands.yaml"), CHAPTERS)
    with pytest.raises(ValueError, match="'speechcommands'"):
        runner.load_params("speech-commands", CHAPTERS)
