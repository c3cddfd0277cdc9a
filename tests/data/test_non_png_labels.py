"""`data check` on a VOC folder whose mask was saved as .jpg: the file is named and said to need PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from zsplg_fast.cli.data import app
from zsplg_fast.data import write_label


def test_data_check_names_a_jpg_mask(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    for sid in ("a", "b"):
        Image.new("RGB", (8, 6)).save(root / "JPEGImages" / f"{sid}.jpg")
    write_label(root / "SegmentationClass" / "a.png", np.ones((6, 8), np.uint8))
    Image.new("L", (8, 6), 1).save(root / "SegmentationClass" / "b.jpg", format="JPEG")
    res = CliRunner().invoke(app, ["check", "--data", f"voc:{root}", "--num-classes", "3"])
    assert res.exit_code == 1, res.output
    assert "b.jpg" in res.output and "labels must be PNG" in res.output
    # a bare-id split file reads the same way
    (root / "ids.txt").write_text("a\nb\n")
    res = CliRunner().invoke(app, ["check", "--data", f"voc:{root}", "--split", "ids.txt"])
    assert res.exit_code == 1 and "b.jpg" in res.output and "labels must be PNG" in res.output, res.output
