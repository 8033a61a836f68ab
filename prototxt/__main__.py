"""`python -m prototxt`: rewrite the generated CFN files here from jigsaw/architecture.py."""
from jigsaw.caffe_form import committed_prototxts
from tools.run.atomic import atomic_open

from . import path

for name, text in committed_prototxts().items():
    with atomic_open(path(name), "w") as f:
        f.write(text)
    print(f"wrote {path(name)}")
