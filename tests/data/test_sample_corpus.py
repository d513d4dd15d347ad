"""The built-in sample corpus: deterministic, multilingual and multi-script, separate held-out text."""

import json
import unicodedata

from hierpt.data.sample_corpus import HELD_BACK, LANGUAGES, write_sample_corpus


def _script(text: str) -> str:
    letters = [c for c in text if c.isalpha()]
    names = [unicodedata.name(c).split()[0] for c in letters]
    return max(set(names), key=names.count)


def test_same_seed_same_bytes_and_eval_differs_from_train(tmp_path):
    a = write_sample_corpus(tmp_path / "a", train_bytes=5000, eval_bytes=2000, seed=3)
    b = write_sample_corpus(tmp_path / "b", train_bytes=5000, eval_bytes=2000, seed=3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    train = set((tmp_path / "a" / "train" / "en" / "part-000.jsonl").read_text().splitlines())
    held_out = set((tmp_path / "a" / "eval" / "en" / "part-000.jsonl").read_text().splitlines())
    assert train and held_out and not train & held_out
    heldout_langs = {json.loads(line)["lang"] for line in (tmp_path / "a" / "heldout.jsonl").read_text().splitlines()}
    assert heldout_langs == set(LANGUAGES)


def test_eight_languages_in_six_scripts_with_a_held_back_latin_language(tmp_path):
    write_sample_corpus(tmp_path, train_bytes=3000, eval_bytes=1000, files_per_language=2)
    scripts = {}
    for lang in LANGUAGES:
        paths = sorted((tmp_path / "train" / lang).glob("*.jsonl"))
        lines = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
        assert {r["lang"] for r in lines} == {lang}
        assert sum(len(r["text"].encode()) for r in lines) >= 3000
        scripts[lang] = _script(" ".join(r["text"] for r in lines))
    assert len(set(scripts.values())) >= 6, scripts
    assert set(HELD_BACK) <= set(LANGUAGES) and all(scripts[lang] == "LATIN" for lang in HELD_BACK)
