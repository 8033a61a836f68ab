"""Optional TensorBoard logging beside a run's CSV logs (`--tensorboard`): the same scalars, in
OUT/tensorboard, for `tensorboard --logdir OUT`. The CSVs stay the record; this is a view."""
import os

from .errors import UserError


class Scalars:
    """add(tag, value, step) writes when enabled and does nothing otherwise, so callers need no branches."""

    def __init__(self, folder: str, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self.writer = SummaryWriter(os.path.join(folder, "tensorboard"))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), int(step))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
