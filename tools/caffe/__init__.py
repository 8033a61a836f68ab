"""The Caffe library, built on `tools.run`: .prototxt and .caffemodel I/O, any Caffe net as a PyTorch module
(layers in `layers/`), Caffe's solvers, preprocessing, export and the check against OpenCV."""
