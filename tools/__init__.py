"""Read, build and write Caffe nets without Caffe, on top of the run infrastructure every command shares.

Two floors: `tools.run` (errors, atomic files, torch checkpoints, device / precision / seed streams, locks,
run records, options, the CLI runner, safe paths and HDF5) knows nothing of Caffe; `tools.caffe` (prototxt,
caffemodel, the net builder and its layers, solvers, export, verify, preprocess) is built on it. The names
below load on first use, so `import tools` or `import tools.run.errors` does not import torch.
"""
from .run.lazy import lazy_exports

_WHERE = {"CaffeError": "run.errors", "UserError": "run.errors", "CaffeNet": "caffe.net",
          "LoadReport": "caffe.net", "load_caffe_net": "caffe.net", "save_caffe_net": "caffe.writer",
          "read_net": "caffe.prototxt", "read_solver": "caffe.prototxt", "write_prototxt": "caffe.prototxt",
          "read_caffemodel": "caffe.caffemodel", "write_caffemodel": "caffe.caffemodel"}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
