"""jigsaw train's curves.png, read back as matplotlib objects: ln N on the loss, validation at every test interval."""
import math

from jigsaw.plots import plot_training
from transfer.probe_tables import write_csv
from tests.figures import drawn, horizontal_lines, texts


def test_curves_mark_ln_n_and_join_validation_at_every_test_interval(tmp_path, monkeypatch):
    write_csv(tmp_path / "log.csv", [dict(iter=i, loss=math.log(30) - i / 200, top1=i / 400, lr=0.001)
                                  for i in range(1, 301)])
    write_csv(tmp_path / "val.csv", [dict(iter=i, loss=math.log(30) - i / 250, top1=i / 500, top5=i / 200)
                                  for i in (100, 200, 300)])
    _, (fig,) = drawn(monkeypatch, plot_training, str(tmp_path), chance=1 / 30, test_interval=100)
    loss, accuracy = fig.axes[:2]
    assert [round(y, 6) for y in horizontal_lines(loss)] == [round(math.log(30), 6)]
    assert any("ln 30 = 3.40" in t for t in texts(loss))
    assert horizontal_lines(accuracy) == [1 / 30]
    validation = [line for line in loss.get_lines() if line.get_label().startswith("validation")]
    assert len(validation) == 1 and list(validation[0].get_xdata()) == [100, 200, 300]
    assert validation[0].get_linestyle() == "-" and "every 100 iterations" in validation[0].get_label()
    assert all(ax.get_xlabel() == "iteration" and ax.get_ylabel() for ax in (loss, accuracy))
