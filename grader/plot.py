"""Live training curves for notebooks.

`LivePlot` has the interface of d2l's `Animator` (`add(x, y)` with one value or a list of values
per curve), but updates its figure in place (a display id) instead of clearing the cell's
output, so a tqdm progress bar in the same cell stays visible.
"""

from __future__ import annotations

import matplotlib.pyplot as plt


class LivePlot:
    def __init__(self, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None,
                 xscale="linear", yscale="linear", fmts=("-", "m--", "g-.", "r:"),
                 figsize=(4.5, 3)):
        from IPython import display

        self.fig, self.ax = plt.subplots(figsize=figsize)
        self.xlabel, self.ylabel, self.legend = xlabel, ylabel, legend or []
        self.xlim, self.ylim, self.xscale, self.yscale, self.fmts = xlim, ylim, xscale, yscale, fmts
        self.X: list[list] = []
        self.Y: list[list] = []
        self.handle = display.display(self.fig, display_id=True)
        plt.close(self.fig)  # shown through the display id only, not again at the cell's end

    def add(self, x, y):
        ys = list(y) if hasattr(y, "__len__") else [y]
        xs = list(x) if hasattr(x, "__len__") else [x] * len(ys)
        if not self.X:
            self.X, self.Y = [[] for _ in ys], [[] for _ in ys]
        for i, (a, b) in enumerate(zip(xs, ys)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(float(b))
        ax = self.ax
        ax.cla()
        for xs_i, ys_i, fmt in zip(self.X, self.Y, self.fmts):
            ax.plot(xs_i, ys_i, fmt)
        ax.set_xlabel(self.xlabel or "")
        ax.set_ylabel(self.ylabel or "")
        ax.set_xscale(self.xscale)
        ax.set_yscale(self.yscale)
        if self.xlim:
            ax.set_xlim(*self.xlim)
        if self.ylim:
            ax.set_ylim(*self.ylim)
        if self.legend:
            ax.legend(self.legend)
        ax.grid(True)
        if self.handle is not None:
            self.handle.update(self.fig)
