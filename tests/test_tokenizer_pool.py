"""Spare tokenizers: a run takes one instead of parsing, and gives it back, even when cancelled."""

import os

import pytest

from core.engine.recipe import load_recipe
from core.engine.runner import run_recipe
from core.events import StageStarted
from core.models import loading as models
from core.models import tokenizer_pool
from tests.conftest import SAMPLE_TEXT
from tests.helpers import collect, write_recipe


@pytest.fixture(autouse=True)
def empty_pool():
    tokenizer_pool.clear()
    yield
    tokenizer_pool.clear()


@pytest.fixture
def parses(monkeypatch):
    """Count real tokenizer parses."""
    count = [0]
    real = models._parse_tokenizer

    def counting(folder, trust_remote_code):
        count[0] += 1
        return real(folder, trust_remote_code)

    monkeypatch.setattr(models, "_parse_tokenizer", counting)
    return count


@pytest.fixture
def recipe(tmp_path, tiny_llama_dir):
    text = tmp_path / "text.txt"
    text.write_text(SAMPLE_TEXT)
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", tiny_llama_dir, text))


def test_pool_lends_each_spare_once_and_keys_on_the_files(tmp_path, tiny_llama_dir):
    key = tokenizer_pool.pool_key(tiny_llama_dir, False)
    assert tokenizer_pool.take(key) is None
    spare = object()
    tokenizer_pool.give(key, spare)
    assert tokenizer_pool.take(key) is spare
    assert tokenizer_pool.take(key) is None, "a spare is lent to one user only"

    tokenizer_pool.give(key, spare)
    assert tokenizer_pool.pool_key(tiny_llama_dir, True) != key, "the remote-code choice is part of the key"
    stat = (tiny_llama_dir / "tokenizer.json").stat()
    os.utime(tiny_llama_dir / "tokenizer.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert tokenizer_pool.take(tokenizer_pool.pool_key(tiny_llama_dir, False)) is None, "an edited file is parsed again"


def test_pool_keeps_the_last_few_folders(tmp_path):
    keys = [tokenizer_pool.pool_key(tmp_path / str(i), False) for i in range(tokenizer_pool.MAX_FOLDERS + 1)]
    for key in keys:
        tokenizer_pool.give(key, key)
    assert tokenizer_pool.take(keys[0]) is None
    assert tokenizer_pool.take(keys[-1]) == keys[-1]


def test_second_run_reuses_the_first_runs_tokenizer(tmp_path, recipe, parses):
    collect(run_recipe(recipe, tmp_path / "one"))
    assert parses[0] == 1
    collect(run_recipe(recipe, tmp_path / "two"))
    assert parses[0] == 1, "the second run took the first run's tokenizer from the pool"
    assert (tmp_path / "two" / "tokenizer.json").is_file()


def test_model_page_load_stocks_a_spare_for_the_run(tmp_path, recipe, tiny_llama_dir, parses):
    loaded = models.load_model(str(tiny_llama_dir))
    models.stock_spare_tokenizer(loaded)
    assert parses[0] == 2 and tokenizer_pool.has_spare(loaded.tokenizer_key)
    models.stock_spare_tokenizer(loaded)
    assert parses[0] == 2, "one spare per folder is enough"
    collect(run_recipe(recipe, tmp_path / "out"))
    assert parses[0] == 2, "the run took the spare"


def test_cancelled_run_gives_its_tokenizer_back(tmp_path, recipe, parses):
    job = run_recipe(recipe, tmp_path / "out")
    for event in job:
        if isinstance(event, StageStarted) and event.stage == "measure_before":
            job.close()  # what Cancel does: the generator stops at a yield
            break
    assert not (tmp_path / "out").exists()
    collect(run_recipe(recipe, tmp_path / "out"))
    assert parses[0] == 1


def test_start_up_stocks_a_spare_only_for_models_already_on_disk(tmp_path, tiny_llama_dir, parses):
    assert models.stock_spare_tokenizer_for(str(tiny_llama_dir))
    assert tokenizer_pool.has_spare(tokenizer_pool.pool_key(tiny_llama_dir, False)) and parses[0] == 1
    assert not models.stock_spare_tokenizer_for("someone/not-downloaded"), "nothing is downloaded for a spare"
    gguf = tmp_path / "never-converted.gguf"
    gguf.write_bytes(b"GGUF")
    assert not models.stock_spare_tokenizer_for(str(gguf)), "nothing is converted for a spare"
    assert not models.stock_spare_tokenizer_for(str(tmp_path / "missing")), "a bad path is left to the Load button"
    assert parses[0] == 1
