"""Read, build and write Caffe nets without Caffe: prototxt/caffemodel I/O, a PyTorch builder, Caffe solvers.

Also what the other packages share: user errors (errors), atomic files (atomic), checkpoints, run settings
as command-line options (options), device / precision / seed streams (runtime). The names below load on
first use, so `import tools.errors` does not import torch.
"""
from .lazy import lazy_exports

_WHERE = {"CaffeError": "errors", "UserError": "errors", "CaffeNet": "net", "LoadReport": "net",
          "load_caffe_net": "net", "save_caffe_net": "writer", "read_net": "prototxt",
          "read_solver": "prototxt", "write_prototxt": "prototxt", "read_caffemodel": "caffemodel",
          "write_caffemodel": "caffemodel"}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
