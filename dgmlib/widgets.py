"""Interactive figures for the lectures: controls whose movement redraws one figure.

``explore(draw, **controls)`` makes a matplotlib figure, draws it once with the controls' current
values by calling ``draw(ax, **values)``, and returns an :class:`Exploration`. Displayed (as the
last expression of a cell, or with ``display``), it shows the controls and, below them, the
figure as an ordinary image output of the cell. So the stored notebook and the book show the
figure at the default values: a slider needs a running kernel, so the book shows the image
alone, with no placeholder, and JupyterLab, before the notebook is run (or trusted), shows one
line of text in place of the controls. Once the cell has run, moving a control calls ``draw``
again and replaces the image in place. An error raised by ``draw`` while a control moves is
shown under the controls.

Example, the temperature of Gumbel-softmax (Lecture 07)::

    import ipywidgets as widgets
    from dgmlib.widgets import explore

    logits = torch.tensor([1.0, 0.0, -1.0])
    gumbel = -torch.log(-torch.log(torch.rand(500, 3, generator=torch.Generator().manual_seed(0))))

    def draw_samples(ax, tau):
        y = torch.softmax((logits + gumbel) / tau, dim=-1)  # [500, 3] points of the simplex
        ax.scatter(y[:, 1] + y[:, 2] / 2, y[:, 2] * 3**0.5 / 2, s=4)
        ax.set(xlim=(0, 1), ylim=(0, 0.9), aspect="equal", title=f"tau = {tau:.2f}")

    explore(draw_samples, tau=widgets.FloatLogSlider(value=1.0, min=-1, max=1, step=0.05))

``draw`` receives a fresh (cleared) axis each time; with ``ncols=2`` (or ``nrows``) it receives
the array of axes, as from ``plt.subplots``. ``Exploration.png()`` gives the current image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets
import numpy as np
from IPython import get_ipython
from IPython.display import DisplayHandle, display
from matplotlib.figure import Figure


class Exploration:
    """A figure redrawn by ``draw(axes, **values)`` whenever one of ``controls`` moves."""

    def __init__(
        self,
        draw: Callable[..., Any],
        controls: Mapping[str, ipywidgets.ValueWidget],
        figsize: tuple[float, float] = (6.0, 4.0),
        nrows: int = 1,
        ncols: int = 1,
    ) -> None:
        if not callable(draw):
            raise TypeError(f"explore: draw should be a function, got {type(draw).__name__}")
        if not controls:
            raise ValueError("explore: expected at least one control, e.g. tau=FloatSlider(...)")
        for name, control in controls.items():
            if not isinstance(control, ipywidgets.ValueWidget):
                raise TypeError(
                    f"explore: control {name!r} should be an ipywidgets value widget "
                    f"(e.g. ipywidgets.FloatSlider), got {type(control).__name__}"
                )
            if not control.description:
                control.description = name
        self.draw = draw
        self.controls = dict(controls)
        # A figure outside pyplot: the inline backend does not show it a second time.
        self.fig = Figure(figsize=figsize)
        self.axes = self.fig.subplots(nrows, ncols, squeeze=True)
        self.messages = ipywidgets.Output()
        self.widget = ipywidgets.VBox([*self.controls.values(), self.messages])
        self.handles: list[DisplayHandle] = []
        self.redraw()
        for control in self.controls.values():
            control.observe(self.on_change, names="value")

    @property
    def values(self) -> dict[str, Any]:
        """The controls' current values, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def redraw(self) -> None:
        """Clear the axes, call ``draw`` with the current values, update every displayed image."""
        for ax in np.ravel(self.axes):
            ax.clear()
        self.draw(self.axes, **self.values)
        if self.handles:
            bundle = self.mimebundle()
            for handle in self.handles:
                handle.update(bundle, raw=True)

    def on_change(self, change: Mapping[str, Any]) -> None:
        """A control moved: redraw, showing an error of ``draw`` under the controls."""
        self.messages.clear_output()
        with self.messages:  # the Output widget shows the traceback instead of losing it
            self.redraw()

    def png(self) -> bytes:
        """The figure as PNG bytes, as the notebook shows it."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()

    def mimebundle(self) -> dict[str, str]:
        """The image output of the figure: PNG and a text stand-in."""
        width, height = self.fig.get_size_inches() * self.fig.dpi
        n_axes = len(self.fig.axes)
        return {
            "image/png": base64.b64encode(self.png()).decode("ascii"),
            "text/plain": f"<Figure size {width:g}x{height:g} with {n_axes} Axes>",
        }

    def _ipython_display_(self) -> None:
        """Show the controls, then the figure as an image that later redraws replace."""
        if get_ipython() is None:  # plain Python: nothing to show the controls in
            return
        # the text stands in for the controls where widgets are not rendered (a notebook that
        # JupyterLab does not trust yet, before it is run)
        controls = self.widget._repr_mimebundle_()
        controls["text/plain"] = f"(controls {', '.join(self.controls)}: run the cell to use them)"
        display(controls, raw=True)
        self.handles.append(display(self.mimebundle(), raw=True, display_id=True))


def choose(
    values: Sequence[Any], value: Any, description: str, fmt: str | None = None
) -> ipywidgets.SelectionSlider:
    """A slider over the ``values`` a lecture computed beforehand, starting at ``value``, each
    labelled ``fmt.format(v)`` (e.g. ``"{:.2g}"``; ``None``: ``str(v)``)."""
    values = list(values)
    if value not in values:
        raise ValueError(f"choose: value {value!r} is not one of the {len(values)} values given")
    options = [(str(v) if fmt is None else fmt.format(v), v) for v in values]
    return ipywidgets.SelectionSlider(options=options, value=value, description=description)


def explore(
    draw: Callable[..., Any],
    *,
    figsize: tuple[float, float] = (6.0, 4.0),
    nrows: int = 1,
    ncols: int = 1,
    **controls: ipywidgets.ValueWidget,
) -> Exploration:
    """A figure drawn by ``draw(ax, **values)`` and redrawn when a control moves (see above)."""
    return Exploration(draw, controls, figsize=figsize, nrows=nrows, ncols=ncols)
