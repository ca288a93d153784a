"""The package's layering (docs/pipeline.md, "Architecture"): no import circle, so that every
import points down a floor; and the command line starts without the heavy libraries."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_graph():
    spec = importlib.util.spec_from_file_location("import_graph",
                                                  ROOT / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_no_module_imports_one_on_its_own_floor_or_higher():
    graph_tools = import_graph()
    graph = graph_tools.edges(graph_tools.modules(ROOT / "src"))
    assert [c for c in graph_tools.circles(graph) if len(c) > 1] == []
    level = graph_tools.floors(graph)
    assert all(level[b] < level[a] for a, targets in graph.items() for b in targets)
    assert "deepstdp.loop.training" not in graph["deepstdp.conversion.converter"] | \
        graph["deepstdp.conversion.evaluation"]  # the spiking stage stands beside the loop


def test_no_folder_imports_one_on_its_own_floor_or_higher():
    graph_tools = import_graph()
    folders = graph_tools.folders(graph_tools.edges(graph_tools.modules(ROOT / "src")))
    assert [c for c in graph_tools.circles(folders) if len(c) > 1] == []
    level = graph_tools.floors(folders)
    assert all(level[b] < level[a] for a, targets in folders.items() for b in targets)


def test_every_module_is_in_a_stage_folder_or_a_root_module_of_the_table():
    """docs/pipeline.md's architecture table is the map: a newcomer finds any part in one hop."""
    table = (ROOT / "docs" / "pipeline.md").read_text().split("## Architecture")[1]
    table = table.split("\n\n")[2]
    graph_tools = import_graph()
    rooms = graph_tools.folders(graph_tools.edges(graph_tools.modules(ROOT / "src")))
    for room in rooms:
        name = room.removeprefix("deepstdp.")
        assert f"`{name}/`" in table or f"`{name}`" in table, name
    roots = [p.stem for p in (ROOT / "src" / "deepstdp").glob("*.py") if p.stem != "__init__"]
    assert sorted(roots) == ["cli", "config", "registry"]


def test_the_command_line_and_the_settings_load_without_torch_or_numba():
    code = ("import sys, deepstdp.cli, deepstdp.config, deepstdp.run.rundir, "
            "deepstdp.clustering, deepstdp.clustering.choices, deepstdp.clustering.stdp.settings, "
            "deepstdp.conversion.settings; "
            "assert not {'torch', 'numba'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
