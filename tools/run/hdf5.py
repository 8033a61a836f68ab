"""HDF5 files given by a user, read safely: no external links, soft links, external storage or virtual
datasets (they read other files), and no dataset that declares more bytes than the file stores."""
from typing import Any, List

from .errors import UserError


def _link(parent, name, path):
    import h5py
    link = parent.get(name, getlink=True)
    if link is None:
        raise UserError(f"{path}: no '{name}' in {parent.name}")
    if not isinstance(link, h5py.HardLink):
        raise UserError(f"{path}: '{parent.name.rstrip('/')}/{name}' is a link to elsewhere; "
                        "links are not followed in files given to read")
    return parent[name]


def group(parent: Any, name: str, path: str) -> Any:
    """The subgroup `name` of `parent` (a hard link to a group), or one line."""
    import h5py
    obj = _link(parent, name, path)
    if not isinstance(obj, h5py.Group):
        raise UserError(f"{path}: '{obj.name}' is not a group")
    return obj


# deflate, the strongest filter HDF5 files use here, tops out near 1032:1; unwritten chunks (the fill value)
# store nothing at all. A dataset declaring more than this is read whole only after the check.
MAX_RATIO = 1100
SLACK_BYTES = 64 << 20


def dataset(parent: Any, name: str, path: str) -> Any:
    """The dataset `name` of `parent`, checked: a hard link, stored in this file, holding the bytes its
    shape declares (compressed data: at most MAX_RATIO times what it stores, plus SLACK_BYTES)."""
    import h5py
    obj = _link(parent, name, path)
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: '{obj.name}' is not a dataset")
    if obj.is_virtual or obj.external:
        raise UserError(f"{path}: '{obj.name}' keeps its data outside this file; not read")
    declared = obj.size * obj.dtype.itemsize
    stored = obj.id.get_storage_size()
    if obj.compression is None and not obj.scaleoffset and stored < declared:
        raise UserError(f"{path}: '{obj.name}' declares {declared} bytes, the file stores {stored}")
    if declared > MAX_RATIO * stored + SLACK_BYTES:  # compressed: no filter here expands data that far
        raise UserError(f"{path}: '{obj.name}' declares {declared} bytes from {stored} stored (compressed "
                        f"over {MAX_RATIO}:1); not read")
    return obj


def names(group_: Any, path: str) -> List[str]:
    """The members of a group, each a hard link (checked when opened with group() or dataset())."""
    return [name for name in group_.keys() if _link(group_, name, path) is not None]
