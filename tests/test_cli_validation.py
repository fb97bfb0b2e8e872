"""The command line checks every argument against the corpus before any model trains: a
mistyped class, --classes given to a sample request, an --out that cannot be written."""

from __future__ import annotations

import pytest

from speechul import cli, train

TINY = ["grid", "--size", "tiny", "--epochs", "1", "--methods", "finetune", "--device", "cpu"]


@pytest.fixture
def no_training(monkeypatch):
    """Any training is a test failure: every check must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model trained before the arguments were checked")

    monkeypatch.setattr(train, "train_on", refuse)
    monkeypatch.setattr(train, "fit", refuse)
    monkeypatch.setattr(train, "original", refuse)  # a cached one too: found before, not after


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--kind", "class", "--classes", "yse"], "unknown keyword 'yse'"),
    (["--kind", "speaker", "--speakers", "nobody"], "unknown speaker 'nobody'"),
    (["--kind", "sample", "--classes", "yes"], "argument --classes: only a 'class' request"),
    (["--kind", "class", "--classes", "yes", "--speakers", "x"],
     "argument --speakers: only a 'speaker' request"),
    (["--task", "keyword,speaker", "--kind", "class", "--classes", "yes"],
     "unknown speaker 'yes'"),  # a keyword is no class of the speaker model
])
def test_a_bad_request_is_a_usage_error_before_training(extra, message, tmp_path, capsys,
                                                        no_training):
    err = _usage_error([*TINY, *extra, "--out", str(tmp_path / "out")], capsys)
    assert message in err


def test_an_out_folder_that_cannot_be_written_is_refused_first(tmp_path, capsys, no_training):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert "argument --out" in _usage_error([*TINY, "--out", str(blocked)], capsys)
    # A folder that exists but takes no files (as root, chmod would not stop the writes).
    assert "cannot write" in _usage_error([*TINY, "--out", "/proc/self"], capsys)
