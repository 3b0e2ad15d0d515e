"""dgmlib.widgets: controls that redraw one figure, in plain Python and in a real kernel."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ipywidgets
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dgmlib.widgets import Exploration, choose, explore

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def executed(cells: list) -> nbformat.NotebookNode:
    """A notebook of ``cells`` run by nbclient in a python3 kernel, as the lectures are."""
    nb = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def draw_power(ax, p: float) -> None:
    """y = x**p on [0, 1]: one line whose data the tests can read back."""
    x = np.linspace(0.0, 1.0, 11)
    ax.plot(x, x**p)
    ax.set_title(f"p = {p:g}")


def slider(value: float = 1.0) -> ipywidgets.FloatSlider:
    return ipywidgets.FloatSlider(value=value, min=0.5, max=3.0, step=0.5)


def test_draws_at_the_default_and_redraws_when_the_control_moves() -> None:
    ex = explore(draw_power, p=slider(1.0))
    x = np.linspace(0.0, 1.0, 11)
    (line,) = ex.axes.lines
    assert np.array_equal(line.get_ydata(), x)  # x**1
    first = ex.png()
    ex.controls["p"].value = 2.0
    (line,) = ex.axes.lines  # the axis was cleared: one line, not two
    assert np.array_equal(line.get_ydata(), x**2)
    assert ex.axes.get_title() == "p = 2"
    assert ex.values == {"p": 2.0}
    assert ex.png() != first, "the image did not change with the control"
    ex.controls["p"].value = 1.0
    assert ex.png() == first, "the image at the default differs from the first drawing"


def test_the_image_output_is_the_figure() -> None:
    ex = explore(draw_power, figsize=(4.0, 3.0), p=slider())
    bundle = ex.mimebundle()
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(PNG_MAGIC) and png == ex.png()
    assert bundle["text/plain"] == "<Figure size 400x300 with 1 Axes>"


def test_several_controls_and_axes() -> None:
    seen = []

    def draw(axes, p: float, label: str) -> None:
        seen.append((len(axes), p, label))
        for ax in axes:
            draw_power(ax, p)

    ex = explore(draw, ncols=2, p=slider(), label=ipywidgets.Dropdown(options=["a", "b"]))
    ex.controls["label"].value = "b"
    assert seen == [(2, 1.0, "a"), (2, 1.0, "b")]
    assert ex.controls["p"].description == "p"  # a control without a description gets its name
    assert [c.description for c in ex.widget.children[:2]] == ["p", "label"]


def test_choose_slides_over_given_values_with_formatted_labels() -> None:
    seen = []
    ex = explore(
        lambda ax, s: seen.append(s), s=choose([0.001, 0.0316, 1.0], 0.0316, "width", "{:.2g}")
    )
    control = ex.controls["s"]
    assert [label for label, _ in control.options] == ["0.001", "0.032", "1"]
    assert control.description == "width" and control.value == 0.0316
    control.index = 2  # one step of the slider to the right
    assert seen == [0.0316, 1.0]
    assert [label for label, _ in choose([1, 10], 1, "K").options] == ["1", "10"]
    with pytest.raises(ValueError, match="value 3 is not one of the 2 values given"):
        choose([1, 10], 3, "K")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="control 'p' should be an ipywidgets value widget"):
        explore(draw_power, p=1.0)
    with pytest.raises(ValueError, match="at least one control"):
        explore(draw_power)
    with pytest.raises(TypeError, match="draw should be a function"):
        Exploration("draw", {"p": slider()})


@pytest.mark.slow
def test_in_a_kernel_the_figure_is_an_image_output_that_moving_a_control_replaces() -> None:
    """Executed by nbclient as the stored notebooks are: the cell's outputs are the controls and
    a PNG (no error, no text); setting the control from a later cell replaces that PNG in place
    (the update a slider's movement makes in JupyterLab); an error of draw goes to the widget."""
    setup = (
        "import ipywidgets\nimport numpy as np\nfrom dgmlib.widgets import explore\n\n"
        "def draw(ax, p):\n"
        "    if p > 2.5:\n"
        "        raise ValueError('p too large for this figure')\n"
        "    x = np.linspace(0, 1, 11)\n"
        "    ax.plot(x, x**p)\n\n"
        "ex = explore(draw, p=ipywidgets.FloatSlider(value=1.0, min=0.5, max=3.0, step=0.5))\n"
        "ex"
    )
    nb = executed(
        [
            new_code_cell(setup),
            new_code_cell("first = ex.png()\nex.controls['p'].value = 2.0\nsecond = ex.png()"),
            new_code_cell("ex.controls['p'].value = 3.0"),
            new_code_cell(
                "import base64\nprint(base64.b64encode(first).decode())\n"
                "print(base64.b64encode(second).decode())"
            ),
        ]
    )
    outputs = nb.cells[0].outputs
    kinds = [sorted(o.get("data", {})) for o in outputs]
    assert kinds == [
        ["application/vnd.jupyter.widget-view+json", "text/plain"],
        ["image/png", "text/plain"],
    ], f"unexpected outputs {[o.output_type for o in outputs]}: {kinds}"
    for cell in nb.cells[1:3]:
        assert not cell.outputs, f"{cell.source!r} printed {cell.outputs}"
    first, second = (base64.b64decode(s) for s in nb.cells[3].outputs[0]["text"].split())
    shown = base64.b64decode(outputs[1]["data"]["image/png"])
    assert shown.startswith(PNG_MAGIC) and first != second
    assert shown == second, "the displayed image was not replaced by the one of p = 2"
    state = json.dumps(nb.metadata.get("widgets", {}))
    assert "p too large for this figure" in state, "the error of draw was not shown under it"
    nbformat.validate(nb)


@pytest.mark.book
def test_the_book_shows_the_figure_alone(tmp_path) -> None:
    """A page made by Jupyter Book (with the course's ipywidgets setting) from a stored
    exploration shows its image, loads no widget script and shows no text for the controls."""
    yaml = pytest.importorskip("yaml")
    if shutil.which("jupyter-book", path=str(BIN)) is None:
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    course_config = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    widgets_js = course_config["sphinx"]["config"]["nb_ipywidgets_js"]
    nb = executed(
        [
            new_markdown_cell("# An exploration"),
            new_code_cell(
                "import ipywidgets\nfrom dgmlib.widgets import explore\n\n"
                "explore(lambda ax, p: ax.plot([0, 1], [0, p]), p=ipywidgets.FloatSlider(1.0))"
            ),
        ]
    )
    assert "widgets" in nb.metadata  # the widget state is stored, as in the lectures
    nbformat.write(nb, tmp_path / "page.ipynb")
    config = {
        "title": "t",
        "execute": {"execute_notebooks": "off"},
        "sphinx": {"config": {"nb_ipywidgets_js": widgets_js}},
    }
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    proc = subprocess.run(
        [str(BIN / "jupyter-book"), "build", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (tmp_path / "_build" / "html" / "page.html").read_text()
    output = page[page.index('<div class="cell_output') :]
    output = output[: output.index("</div>")]
    assert len(re.findall(r"<img ", output)) == 1, output
    visible = re.sub(r"<script.*?</script>|<[^>]+>", "", output, flags=re.DOTALL).strip()
    assert visible == "", f"text shown beside the figure: {visible!r}"
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert not [s for s in scripts if "widget" in s or "require" in s or "://" in s], scripts
