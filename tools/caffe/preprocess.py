"""Caffe's input preprocessing without Caffe: `.binaryproto` mean files, and the DataTransformer's TEST-phase
transform (crop, mirror, mean file or mean values, scale) applied to an image as Caffe's data layers read it."""
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..run.atomic import read_bounded
from ..run.errors import CaffeError
from ..run.images import read_image

MAX_MEAN_BYTES = 1 << 30


def read_blobproto(path: str, what: str = "mean file") -> np.ndarray:
    """A serialised BlobProto (.binaryproto) as a float32 array of its declared shape."""
    from .caffemodel import _Corrupt, _parse_blob
    buf = read_bounded(path, MAX_MEAN_BYTES, what)
    try:
        return np.asarray(_parse_blob(buf, 0, len(buf), None).data, dtype=np.float32)
    except (_Corrupt, ValueError, IndexError) as e:
        raise CaffeError(f"{path}: not a .binaryproto {what} ({e})") from None


def read_binaryproto(path: str) -> np.ndarray:
    """A mean file (a BlobProto, as Caffe's compute_image_mean writes it) as a float32 (C, H, W) array."""
    mean = read_blobproto(path)
    while mean.ndim > 3 and mean.shape[0] == 1:  # legacy (1, C, H, W)
        mean = mean[0]
    if mean.ndim != 3 or not mean.size:
        raise CaffeError(f"{path}: a mean file holds one (C, H, W) image, this blob has shape {mean.shape}")
    return mean


@dataclass
class Transform:
    """Caffe's TransformationParameter, TEST phase: centre crop to `crop_size`, subtract the mean
    (`mean` a (C, H, W) image the size of the input, or per-channel `mean_values`), multiply by
    `scale`; `mirror` flips left-right (Caffe draws it at random; here it is a choice)."""
    crop_size: int = 0
    mean: Optional[np.ndarray] = None
    mean_values: Sequence[float] = ()
    scale: float = 1.0
    mirror: bool = False

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 or float, BGR as cv::imread gives it -> (C, h, w) float32."""
        img = np.asarray(image, dtype=np.float32)
        if img.ndim == 2:
            img = img[:, :, None]
        h, w, c = img.shape
        crop = self.crop_size
        if crop and (crop > h or crop > w):
            raise CaffeError(f"crop_size {crop} is larger than the {h}x{w} image")
        top, left = ((h - crop) // 2, (w - crop) // 2) if crop else (0, 0)
        ch, cw = (crop, crop) if crop else (h, w)
        out = img[top:top + ch, left:left + cw].transpose(2, 0, 1).copy()
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise CaffeError(f"the mean image is {self.mean.shape}, the input (C, H, W) is {(c, h, w)}: "
                                 "Caffe subtracts the mean before cropping, so they must match")
            out -= self.mean[:, top:top + ch, left:left + cw]
        elif self.mean_values:
            values = list(self.mean_values)
            if len(values) not in (1, c):
                raise CaffeError(f"{len(values)} mean_value(s) for {c} channels: give 1 or one per channel")
            out -= np.asarray(values * c if len(values) == 1 else values, dtype=np.float32)[:, None, None]
        if self.mirror:
            out = out[:, :, ::-1].copy()
        return out * np.float32(self.scale) if self.scale != 1 else out


def load_bgr(path: str) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR, as Caffe's cv::imread reads it."""
    return read_image(path)[:, :, ::-1]


def _bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) -> (height, width, C) float32: half-pixel centres, no antialiasing (cv::resize's
    INTER_LINEAR geometry)."""
    import torch
    import torch.nn.functional as F
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


def resize_bgr(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv::resize(INTER_LINEAR) of a uint8 image, rounded back to uint8 (within one grey level of OpenCV,
    which rounds fixed-point weights)."""
    return np.clip(np.round(_bilinear(image, height, width)), 0, 255).astype(np.uint8)


def classification_input(image: np.ndarray, channels: int, height: int, width: int,
                         mean: Optional[np.ndarray] = None) -> np.ndarray:
    """What Caffe's example classifier (examples/cpp_classification/classification.cpp) feeds its net:
    the BGR image in the net's channels (gray as cv::cvtColor computes it), resized to the input size,
    as float, minus the mean file's per-channel means (it averages the mean image to one value per
    channel); 0-255, no scaling. -> (C, H, W) float32."""
    img = np.asarray(image)
    if channels == 1 and img.ndim == 3:
        b, g, r = (img[:, :, i].astype(np.float32) for i in range(3))
        img = np.round(0.114 * b + 0.587 * g + 0.299 * r).clip(0, 255).astype(np.uint8)[:, :, None]
    elif channels == 3 and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif channels not in (1, 3):
        raise CaffeError(f"the net takes {channels} input channels; an image has 1 or 3")
    if img.shape[:2] != (height, width):
        img = resize_bgr(img, height, width)
    x = img.astype(np.float32).transpose(2, 0, 1).copy()
    if mean is not None:
        if mean.shape[0] != channels:
            raise CaffeError(f"the mean file has {mean.shape[0]} channels, the net takes {channels}")
        x -= mean.reshape(channels, -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None]
    return x


def transformer_input(image: np.ndarray, height: int, width: int, channel_swap: Sequence[int] = (2, 1, 0),
                      raw_scale: float = 255.0, mean: Optional[np.ndarray] = None,
                      input_scale: Optional[float] = None) -> np.ndarray:
    """pycaffe's caffe.io.Transformer.preprocess for deploy nets, in its order: an (H, W, C) image in [0, 1]
    (as caffe.io.load_image gives it, RGB) resized to the input (bilinear, no antialiasing: close to, not
    bit-exact with, skimage's resize), transposed to (C, H, W), channels permuted (RGB -> BGR), times
    raw_scale, minus the mean ((C,) or (C, H, W)), times input_scale -> float32 (C, H, W)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[:2] != (height, width):
        img = _bilinear(img, height, width)
    data = img.transpose(2, 0, 1)
    if channel_swap:
        if sorted(channel_swap) != list(range(data.shape[0])):
            raise CaffeError(f"channel_swap {tuple(channel_swap)} is no order of the {data.shape[0]} channels")
        data = data[list(channel_swap)]
    data = data * np.float32(raw_scale)
    if mean is not None:
        m = np.asarray(mean, dtype=np.float32)
        data = data - (m[:, None, None] if m.ndim == 1 else m)
    if input_scale is not None:
        data = data * np.float32(input_scale)
    return np.ascontiguousarray(data, dtype=np.float32)
