"""HDF5Output: the one BVLC layer that writes to disk (hdf5_output_layer.cpp)."""
import os

import torch

from .. import caffe_pb2 as pb  # noqa: F401 (annotations)
from .base import BuildContext, Layer, Shapes, Tops, register


@register("HDF5Output")
class HDF5Output(Layer):
    """Writes its two bottoms as datasets "data" and "label" of hdf5_output_param.file_name at every forward
    (the file replaced atomically; an existing file that is not HDF5 is never overwritten); no tops;
    gradients pass it by, as in Caffe (no backward). `writes` off (CaffeNet.without_side_effects: export,
    --verify) runs it as a no-op: a user's file is written only by a forward pass asked for."""
    writes = True

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if lp.top:
            self.fail("has no tops")
        self.path = lp.hdf5_output_param.file_name
        if not self.path:
            self.fail("hdf5_output_param.file_name is required")
        if any(len(s) > 4 for s in shapes):  # blob.hpp LegacyShape: num/channels/height/width only
            self.fail(f"writes 4-D blobs (num, channels, height, width); got {[tuple(s) for s in shapes]}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return []

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> Tops:
        if not self.writes:
            return ()
        import h5py
        from ...run.atomic import atomic_files, ensure_dir
        if os.path.lexists(self.path) and not (os.path.isfile(self.path) and h5py.is_hdf5(self.path)):
            self.fail(f"{self.path} exists and is not an HDF5 file; not overwriting it")
        ensure_dir(os.path.dirname(os.path.abspath(self.path)))
        try:
            with atomic_files(self.path) as (tmp,), torch.no_grad(), h5py.File(tmp, "w") as f:
                for name, blob in (("data", data), ("label", label)):  # as Caffe writes them: 4 axes
                    array = blob.detach().float().cpu().numpy()
                    f.create_dataset(name, data=array.reshape(array.shape + (1,) * (4 - array.ndim)))
        except OSError as e:  # h5py's; the rename's own failure is already one line
            self.fail(f"cannot write {self.path} ({e})")
        return ()
