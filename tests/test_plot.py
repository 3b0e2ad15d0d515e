"""dgmlib.plot: the image grids show the given pixels, in rows with their titles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgmlib.plot import image_grid, image_rows


def test_image_grid_places_each_image_with_a_one_pixel_border():
    images = torch.arange(6 * 2 * 3, dtype=torch.float32).reshape(6, 2, 3) / 36
    ax = image_grid(images, nrow=4)
    canvas = ax.images[0].get_array()
    assert canvas.shape == (2 * 2 + 1, 4 * 3 + 3)  # 2 rows of 4 (the last one half empty)
    np.testing.assert_array_equal(canvas[3:5, 4:7], images[5].numpy())  # row 1, column 1
    assert (canvas[2] == 1).all() and (canvas[3:5, 8:] == 1).all()  # border and the empty slots


def test_image_rows_stacks_one_grid_per_row_with_its_title():
    a, b = torch.zeros(3, 4, 4), torch.ones(2, 1, 4, 4)
    fig = image_rows([(a, "first"), (b, "second")], nrow=3, figsize=(6, 2))
    assert [ax.get_title() for ax in fig.axes] == ["first", "second"]
    assert fig.axes[1].images[0].get_array().shape == (4, 2 * 4 + 1)
    with pytest.raises(ValueError, match="at least one"):
        image_rows([], nrow=3, figsize=(6, 2))
