"""HDF5Output: the one BVLC layer that writes to disk (hdf5_output_layer.cpp)."""
import os

import torch

from .. import caffe_pb2 as pb  # noqa: F401 (annotations)
from .base import BuildContext, Layer, Shapes, Tops, register


@register("HDF5Output")
class HDF5Output(Layer):
    """Writes its two bottoms as datasets "data" and "label" of hdf5_output_param.file_name at every forward
    (the file replaced atomically; an existing file that is not HDF5 is never overwritten); no tops;
    gradients pass it by, as in Caffe (no backward)."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if lp.top:
            self.fail("has no tops")
        self.path = lp.hdf5_output_param.file_name
        if not self.path:
            self.fail("hdf5_output_param.file_name is required")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return []

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> Tops:
        import h5py
        from ...run.atomic import atomic_files, ensure_dir
        if os.path.lexists(self.path) and not (os.path.isfile(self.path) and h5py.is_hdf5(self.path)):
            self.fail(f"{self.path} exists and is not an HDF5 file; not overwriting it")
        ensure_dir(os.path.dirname(os.path.abspath(self.path)))
        try:
            with atomic_files(self.path) as (tmp,), torch.no_grad(), h5py.File(tmp, "w") as f:
                f.create_dataset("data", data=data.detach().float().cpu().numpy())
                f.create_dataset("label", data=label.detach().float().cpu().numpy())
        except OSError as e:  # h5py's; the rename's own failure is already one line
            self.fail(f"cannot write {self.path} ({e})")
        return ()
