"""Store layouts: how a decoded RGB image becomes the uint8 square a store holds.

`square` (recipes paper, bbrattoli): shorter side to `size` with PIL's antialiased bilinear, centre
crop size x size.

`jps` (recipes jps, jps++): the fork's generate_jps_dataset.cpp: shorter side to 256 with OpenCV's
`cvResize` (INTER_LINEAR: half-pixel centres, edge clamped, no antialiasing), the other side
`(float)long / short * 256` truncated; then the centre 255x255 crop at corner ((W-255)/2, (H-255)/2).
We store 257x257 from that corner: the fork's transformer reads up to 2 px past its 255 datum on the
last row and column of tiles (offset 21 + channel shift 2 + 170 + 64 = 257), i.e. past its buffer.
Those two extra rows and columns hold the resized image's real pixels where it has them and repeat
its last row/column beyond.
"""
import numpy as np

# torch is imported where an image is resized, so the command lines can read LAYOUTS without it

JPS_SHORT, JPS_CROP, JPS_MARGIN = 256, 255, 2
JPS_SIDE = JPS_CROP + JPS_MARGIN
LAYOUTS = ("jps", "square")


def jps_resized_size(w, h):
    """(new width, new height) as the fork computes them, in float32 arithmetic, truncated."""
    f32 = np.float32
    if w <= h:
        return JPS_SHORT, int(f32(h) / f32(w) * f32(JPS_SHORT))
    return int(f32(w) / f32(h) * f32(JPS_SHORT)), JPS_SHORT


def resize_linear(x, height, width):
    """(3, H, W) uint8 tensor -> (3, height, width) uint8 with OpenCV INTER_LINEAR's geometry
    (within 1 grey level of cv2.resize: OpenCV rounds fixed-point weights, we round floats)."""
    import torch
    import torch.nn.functional as F
    y = F.interpolate(x[None].float(), size=(height, width), mode="bilinear", align_corners=False,
                      antialias=False)[0]
    return y.round_().clamp_(0, 255).to(torch.uint8)


def jps_array(x):
    """(3, H, W) uint8 RGB tensor (any device) -> (257, 257, 3) uint8 in the jps layout."""
    import torch
    h, w = x.shape[1:]
    nw, nh = jps_resized_size(w, h)
    r = resize_linear(x, nh, nw)
    top, left = (nh - JPS_CROP) // 2, (nw - JPS_CROP) // 2
    ar = torch.arange(JPS_SIDE, device=x.device)
    ys, xs = (top + ar).clamp_(max=nh - 1), (left + ar).clamp_(max=nw - 1)
    return r[:, ys][:, :, xs].permute(1, 2, 0).contiguous()


def stored_side(layout, size=256):
    return JPS_SIDE if layout == "jps" else size
