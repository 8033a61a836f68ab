"""The run infrastructure every command uses, and nothing of Caffe: user errors, atomic files, torch
checkpoints, device / precision / seed streams and locks, the run folder and its record, options from
config dataclasses, the CLI runner, safe paths, guarded HDF5, TensorBoard and lazy imports."""
