"""CI: one line with the free space where the suite writes (the clone, the temporary folder, the home folder).

A full disk shows up in pytest as unrelated failures (a store cut short, a tmp_path that cannot be made,
HDF5 crashing as it closes); this line says so first. Usage: disk.py NEED_GB WHEN...
"""
import os
import shutil
import sys
import tempfile


def main(argv):
    need, when = float(argv[0]), " ".join(argv[1:]) or "now"
    places = {"clone": os.getcwd(), "tmp": tempfile.gettempdir(), "home": os.path.expanduser("~")}
    seen, parts, low = set(), [], False
    for name, path in places.items():
        device = os.stat(path).st_dev
        if device in seen:
            continue
        seen.add(device)
        free = shutil.disk_usage(path).free / 1e9
        low |= free < need
        parts.append(f"{name} {path}: {free:.1f} GB free")
    print(f"disk {when}: " + "; ".join(parts)
          + (f" -- LOW: about {need:g} GB is needed; failures below may be a full disk" if low else ""), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
