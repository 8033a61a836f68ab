"""Read, build and write Caffe nets without Caffe: prototxt/caffemodel I/O, a PyTorch builder, Caffe solvers."""
import os

from .caffemodel import read_caffemodel, write_caffemodel
from .errors import CaffeError
from .net import CaffeNet, LoadReport
from .prototxt import read_net, read_solver, write_prototxt
from .writer import save_caffe_net


def load_caffe_net(prototxt, weights=None, phase="TEST", input_shapes=None, device="cpu",
                   seed=None, level=0, stages=()):
    """Build the Caffe net in `prototxt` (path, text or NetParameter) as a CaffeNet module.

    Weights from `weights` (.caffemodel, binary or HDF5) are copied by layer name; what matched is
    in `net.report`. Layers without weights are initialised by their Caffe fillers (seeded by
    `seed`). The module starts in eval mode for phase TEST and train mode for TRAIN.
    """
    net_param = read_net(prototxt, phase=phase, level=level, stages=stages)
    named = read_caffemodel(weights)[1] if weights else None
    path = str(prototxt) if isinstance(prototxt, (str, os.PathLike)) and os.path.exists(prototxt) \
        else "<net>"
    net = CaffeNet(net_param, input_shapes=input_shapes, device=device, weights=named, seed=seed,
                   path=path)
    net.train(str(phase).upper() == "TRAIN")
    return net


__all__ = ["CaffeError", "CaffeNet", "LoadReport", "load_caffe_net", "save_caffe_net", "read_net",
           "read_solver", "read_caffemodel", "write_caffemodel", "write_prototxt"]
