from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ablate import figures
from ablate.collect import collect_results, load_tables

pytestmark = pytest.mark.slow  # starts a Jupyter kernel

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "results.ipynb"


def test_the_notebook_draws_the_packages_figures(group_sweep):
    collect_results(group_sweep)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].source.startswith("RESULTS_DIR =")
    params[0].source = f"RESULTS_DIR = {str(group_sweep)!r}"
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(group_sweep)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    trials, epochs = load_tables(group_sweep)
    assert len(images) == len(figures.make_figures(trials, epochs)) == 4
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
