"""The demo's photographs: each one's source and licence statement is written in full, and a sample
whose docstring states none says so (scikit-image is a test extra, so this test needs it too)."""
import pytest

pytest.importorskip("skimage")

from sample_photos import HELD_OUT, TRAIN, licence  # noqa: E402


@pytest.mark.parametrize("name", TRAIN + HELD_OUT)
def test_every_photo_has_its_whole_licence_statement(name):
    text = licence(name)
    assert text.endswith((".", "licence", ">`_.", ")")), text  # a whole sentence, not a cut
    assert "Returns" not in text and "-----" not in text and "ndarray" not in text, text
    words = ("public domain", "CC0", "copyright", "states no source or licence")
    assert any(w in text for w in words), text
