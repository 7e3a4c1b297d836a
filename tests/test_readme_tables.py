"""Every measured table in the README is the one its committed benchmark result writes."""

from __future__ import annotations

import re

from bench import readme_tables


def test_the_readme_tables_are_written_from_the_committed_results():
    readme = readme_tables.README.read_text()
    marked = re.findall(r"<!-- bench:([\w-]+) -->", readme)
    assert marked, "the README has no generated tables"
    assert set(marked) <= set(readme_tables.RENDERERS)
    for name in marked:  # every marked table has a result file behind it, with its provenance
        body = readme.split(f"<!-- bench:{name} -->\n", 1)[1].split(f"<!-- /bench:{name} -->", 1)[0]
        assert body.startswith("*Measured by `bench/"), name
        assert re.search(r"commit [0-9a-f]{7,}", body), name
    assert readme_tables.render(readme) == readme, "run bench/readme_tables.py after re-running a benchmark"


def test_a_changed_result_changes_the_table(tmp_path, monkeypatch):
    """The check is live: a result file that says otherwise makes the README disagree."""
    import json
    import shutil

    results = tmp_path / "results"
    shutil.copytree(readme_tables.RESULTS, results)
    name = re.findall(r"<!-- bench:([\w-]+) -->", readme_tables.README.read_text())[0]
    file = {"prune-peers": "prune_peers", "quant-peers": "quant_peers", "quant-ingredients": "quant"}.get(name, name)
    data = json.loads((results / f"{file}.json").read_text())
    data["commit"] = "0123456789"
    (results / f"{file}.json").write_text(json.dumps(data))
    monkeypatch.setattr(readme_tables, "RESULTS", results)
    readme = readme_tables.README.read_text()
    assert readme_tables.render(readme) != readme
