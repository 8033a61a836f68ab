"""A raw image folder decoded by torchvision.io on the training device (nvJPEG on CUDA): the JPEGs of a
batch in one call, resized and centre-cropped there; other formats and unreadable JPEGs go through PIL."""
import os
import warnings

import torch
import torch.nn.functional as F

from tools.run.errors import UserError
from tools.run.errors import ImageRefused
from tools.run.images import open_image
from tools.run.runtime import import_torchvision

from .config import MIN_SIDE
from .images import BadImage, list_images, load_image, store_refusal
from .layouts import jps_array, stored_side


def square(img, size):
    """(3, H, W) uint8 -> (size, size, 3) uint8: shorter side to `size` (bilinear, antialiased like
    PIL's), centre crop; the same geometry as `load_image`."""
    h, w = img.shape[-2:]
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    # the CPU has a fast uint8 kernel (channels_last); CUDA interpolates floats
    x = img[None].contiguous(memory_format=torch.channels_last) if img.device.type == "cpu" else img[None].float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[0, :, top:top + size, left:left + size]
    if x.dtype != torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 0)


class DeviceJpegImages:
    """Same interface as FolderImages; `read` returns a (B, size, size, 3) uint8 tensor on `device`."""

    def __init__(self, root, size=256, device="cpu", min_side=MIN_SIDE, layout="square"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import_torchvision()  # fail early, with the reason, if torchvision is missing or does not load
        self.root, self.device, self.min_side = root, torch.device(device), min_side
        self.layout, self.arg_size, self.size = layout, size, stored_side(layout, size)
        self.files = list_images(root)
        if not self.files:
            raise UserError(f"{root}: no image files found")

    def __len__(self):
        return len(self.files)

    @property
    def image_size(self):
        return (self.size, self.size)

    def _device_decodable(self, rel):
        """Header only, no pixels: a real JPEG that the PIL path would store too (the project's checks:
        a regular file, not huge, not tiny or a sliver; nvJPEG would allocate whatever size a header
        claims). Anything else goes to the PIL path, which says why it is skipped."""
        try:
            with open_image(os.path.join(self.root, rel)) as im:
                return im.format == "JPEG" and store_refusal(*im.size, self.min_side) is None
        except ImageRefused:
            return False

    def _fallback(self, rel):
        try:
            return torch.from_numpy(load_image(os.path.join(self.root, rel), self.arg_size, self.min_side,
                                               self.layout).copy())
        except BadImage:
            return torch.zeros(self.size, self.size, 3, dtype=torch.uint8)  # as FolderImages: black

    def read(self, indices, out=None):
        """(B, size, size, 3) uint8 on the device; `out` (a host buffer) is not used."""
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs for TorchCodec, which the GPU image lacks;
            # they still work there and here
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._read(indices)

    def _read(self, indices):
        from torchvision.io import ImageReadMode, decode_jpeg, read_file
        rels = [self.files[i] for i in indices]
        out = torch.empty(len(rels), self.size, self.size, 3, dtype=torch.uint8, device=self.device)
        jpeg = [k for k, r in enumerate(rels) if self._device_decodable(r)]
        data = [read_file(os.path.join(self.root, rels[k])) for k in jpeg]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device) if data else []
        except RuntimeError:  # one bad file fails the batch call: decode one by one
            decoded = []
            for d in data:
                try:
                    decoded.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    decoded.append(None)
        done = set()
        for k, img in zip(jpeg, decoded):
            if img is not None:
                out[k] = jps_array(img) if self.layout == "jps" else square(img, self.size)
                done.add(k)
        for k in range(len(rels)):
            if k not in done:
                out[k] = self._fallback(rels[k]).to(self.device)
        return out

