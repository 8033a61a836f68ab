"""Markers every test package shares: `needs_torchvision` skips, saying why, where torchvision does not load
beside this torch (a CUDA build of torchvision next to a CPU build of torch: 'operator torchvision::nms does not
exist'), so the rest of the suite still runs there."""
import pytest


def _torchvision_problem():
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError) as e:
        return f"torchvision does not load beside this torch ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    return None


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("needs_torchvision")]
    problem = _torchvision_problem() if marked else None
    if problem:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=problem))
