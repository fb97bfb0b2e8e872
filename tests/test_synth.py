"""The embedded corpus: sizes, labels, parts, determinism, cache integrity."""

from __future__ import annotations

from pathlib import Path

import torch

from speechul import synth


def test_tiny_corpus_shape_and_labels(tmp_path):
    payload = synth.build("tiny", cache=tmp_path)
    cfg = synth.SIZES["tiny"]
    n = cfg.n_speakers * len(synth.KEYWORDS) * cfg.takes
    assert payload["waves"].shape == (n, synth.SAMPLE_RATE)
    assert payload["waves"].dtype == torch.int16
    assert payload["speaker"].unique().numel() == cfg.n_speakers
    assert payload["keyword"].unique().numel() == len(synth.KEYWORDS)
    # split by take: every speaker x keyword has train, val and test takes
    counts = torch.bincount(payload["part"], minlength=3).tolist()
    per_cell = n // cfg.takes
    assert counts == [per_cell * cfg.train_takes, per_cell * cfg.val_takes,
                      per_cell * (cfg.takes - cfg.train_takes - cfg.val_takes)]
    # clips are not silent and not clipped flat
    peaks = payload["waves"].abs().amax(dim=1)
    assert (peaks > 1000).all()
    manifest = (tmp_path / "embedded" / payload["key"] / "manifest.csv").read_text().splitlines()
    assert manifest[0] == "index,speaker,keyword,take,split" and len(manifest) == n + 1


def test_generation_is_deterministic(tmp_path):
    a = synth.build("tiny", cache=tmp_path / "a")
    b = synth.build("tiny", cache=tmp_path / "b")
    assert torch.equal(a["waves"], b["waves"])


def test_different_seed_gives_different_audio(tmp_path):
    cfg = synth.SynthConfig(n_speakers=2, takes=3, train_takes=1, val_takes=1, seed=1)
    other = synth.SynthConfig(n_speakers=2, takes=3, train_takes=1, val_takes=1, seed=2)
    assert not torch.equal(synth.build(cfg, cache=tmp_path)["waves"],
                           synth.build(other, cache=tmp_path)["waves"])


def test_damaged_cache_is_rebuilt(tmp_path):
    cfg = synth.SynthConfig(n_speakers=2, takes=3, train_takes=1, val_takes=1)
    first = synth.build(cfg, cache=tmp_path)
    path = next((tmp_path / "embedded").glob("*/corpus.pt"))
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    import pytest

    with pytest.warns(UserWarning, match="damaged"):
        again = synth.build(cfg, cache=tmp_path)
    assert torch.equal(first["waves"], again["waves"])


def test_speakers_are_distinct_and_bad_sizes_rejected(tmp_path):
    import pytest

    voices = [s["voice"] for s in synth.speakers(32)]
    assert len(set(voices)) == 32
    with pytest.raises(ValueError, match="n_speakers"):
        synth.speakers(0)
    with pytest.raises(ValueError, match="unknown corpus size"):
        synth.build("huge", cache=tmp_path)


def test_datasheet_table_matches_the_recipe():
    """data/README.md's size table is the recipe's, not a copy that drifted from it."""
    text = (Path(__file__).parents[1] / "data" / "README.md").read_text()
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip().strip("`").replace(",", "") for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    assert set(rows) == set(synth.SIZES), rows
    for name, cfg in synth.SIZES.items():
        test_takes = cfg.takes - cfg.train_takes - cfg.val_takes
        per_take = cfg.n_speakers * len(synth.KEYWORDS)
        expected = [str(cfg.n_speakers), str(cfg.takes),
                    f"{cfg.train_takes} / {cfg.val_takes} / {test_takes}",
                    str(per_take * cfg.takes),
                    " / ".join(str(per_take * t) for t in (cfg.train_takes, cfg.val_takes,
                                                            test_takes))]
        assert rows[name] == expected, (name, rows[name], expected)
