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
    assert "deepstdp.training" not in graph["deepstdp.conversion.converter"] | \
        graph["deepstdp.conversion.evaluation"]  # the spiking stage stands beside the loop


def test_the_command_line_and_the_settings_load_without_torch_or_numba():
    code = ("import sys, deepstdp.cli, deepstdp.config, deepstdp.rundir, "
            "deepstdp.stdp.settings, deepstdp.conversion.settings; "
            "assert not {'torch', 'numba'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
