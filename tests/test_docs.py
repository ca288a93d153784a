"""docs/api.md stays true: every Python block on it runs, in order, in one namespace."""

import re
from pathlib import Path

from deepstdp import registry

API = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_example_in_the_api_page_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", API.read_text(), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))  # the page registers one
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(API), "exec"), namespace)


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    readme = API.parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(readme), "exec"), namespace)
    assert len(namespace["labels"]) == len(namespace["features"])
