"""Plots read back as matplotlib objects (axes, lines, labels), not pixels: the figures a call drew, kept open."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def drawn(monkeypatch, plot, *args, **kwargs):
    """(plot's return value, the figures it drew): plt.close is held off while it runs."""
    before = set(plt.get_fignums())
    with monkeypatch.context() as m:
        m.setattr(plt, "close", lambda *a, **k: None)
        result = plot(*args, **kwargs)
    figures = [plt.figure(n) for n in plt.get_fignums() if n not in before]
    return result, figures


def texts(ax):
    """Every piece of text an axes shows: title, axis labels, tick labels, legend entries, free text."""
    found = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    found += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() + ax.texts]
    legend = ax.get_legend()
    found += [t.get_text() for t in legend.get_texts()] if legend else []
    return [t for t in found if t]


def horizontal_lines(ax):
    """The y of every horizontal line across the axes (axhline)."""
    return [line.get_ydata()[0] for line in ax.get_lines()
            if len(line.get_xdata()) == 2 and tuple(line.get_xdata()) == (0, 1) and len(set(line.get_ydata())) == 1]


def vertical_lines(ax):
    return [line.get_xdata()[0] for line in ax.get_lines()
            if len(line.get_ydata()) == 2 and tuple(line.get_ydata()) == (0, 1) and len(set(line.get_xdata())) == 1]
