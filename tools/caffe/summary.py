"""A Keras-style table of a CaffeNet: layer, type, output shape(s), parameter count."""
import math
from typing import Any, List, Optional, Tuple


def summary_rows(net: Any) -> List[Tuple[str, ...]]:
    rows = [(name, "Input", [tuple(shape)], 0) for name, shape in net.input_shapes.items()]
    seen = set()
    for key, _, tops in net.plan:
        layer = getattr(net, key)
        count = 0
        for b in layer.blob_names:
            t = getattr(layer, b)
            if id(t) not in seen:
                seen.add(id(t))
                count += math.prod(t.shape)
        rows.append((layer.layer_name, layer.layer_type, [net.blob_shapes[t] for t in tops], count))
    return rows


def summary(net: Any, title: Optional[str] = None) -> str:
    """The summary table as text, with total, trainable and shared parameter counts."""
    rows = summary_rows(net)
    cells = [(f"{n} ({t})", ", ".join(str(tuple(s)) for s in shapes) or "-", f"{c:,}")
             for n, t, shapes, c in rows]
    head = ("Layer (type)", "Output shape", "Param #")
    widths = [max(len(r[i]) for r in cells + [head]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
    unique = {id(p): p for p in net.parameters()}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    state = sum(b.numel() for b in net.buffers())
    out = [title] if title else []
    out += [line, fmt(head), line] + [fmt(r) for r in cells] + [line]
    out.append(f"Total params: {total:,}   Trainable: {trainable:,}   Non-trainable: {total - trainable:,}"
               + (f"   State (BatchNorm statistics): {state:,}" if state else ""))
    return "\n".join(out)
