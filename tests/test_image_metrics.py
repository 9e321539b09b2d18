"""The image figures (f1.train.image_metrics) on tiny fixtures whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from f1.train.image_metrics import colourful_mae, gradient_energy_ratio, image_figures, psnr, saturation_ratio


def test_psnr_of_a_known_error():
    truth = np.zeros((2, 4, 4, 3))
    assert psnr(truth + 0.1, truth) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(truth + np.array([0.1, 0.01]).reshape(2, 1, 1, 1), truth) == pytest.approx((20.0 + 40.0) / 2)  # per frame


def test_saturation_ratio_grey_vs_colour():
    red = np.zeros((1, 4, 4, 3))
    red[..., 0] = 1.0  # saturation 1
    grey = np.full((1, 4, 4, 3), 0.5)  # saturation 0
    half = red.copy()
    half[..., 1:] = 0.5  # (1, .5, .5): saturation 0.5
    assert saturation_ratio(grey, red) == pytest.approx(0.0)
    assert saturation_ratio(half, red) == pytest.approx(0.5)
    assert saturation_ratio(red, red) == pytest.approx(1.0)
    assert saturation_ratio(np.zeros_like(red), red) == 0.0  # black counts as unsaturated, no division by zero


def test_colourful_mae_looks_only_at_the_most_saturated_pixels():
    truth = np.full((1, 10, 10, 3), 0.5)  # a grey table ...
    truth[0, 0, :2] = (0.0, 0.0, 1.0)  # ... with 2 blue pixels: the 2 % most saturated of 100
    wrong_object = truth.copy()
    wrong_object[0, 0, :2] = 0.5  # the object painted grey: |0.5-0|, |0.5-0|, |0.5-1| -> 0.5 a pixel
    wrong_table = truth.copy()
    wrong_table[0, 1:] = 0.0  # the table wrong, the object right
    assert colourful_mae(wrong_object, truth) == pytest.approx(0.5)
    assert colourful_mae(wrong_table, truth) == pytest.approx(0.0)


def test_gradient_energy_ratio_blur_and_ringing():
    stripes = np.zeros((1, 4, 4, 3))
    stripes[:, :, ::2] = 1.0  # vertical stripes: every horizontal difference is +-1, no vertical one
    flat = np.full_like(stripes, 0.5)
    assert gradient_energy_ratio(flat, stripes) == pytest.approx(0.0)  # all blur
    assert gradient_energy_ratio(stripes, stripes) == pytest.approx(1.0)
    assert gradient_energy_ratio(stripes * 2, stripes) == pytest.approx(4.0)  # twice the contrast: 4x the energy
    figures = image_figures(stripes, stripes)
    assert set(figures) == {"psnr", "saturation_ratio", "colourful_mae", "gradient_energy_ratio"}
    assert figures["psnr"] == pytest.approx(100.0)  # MSE 0, floored at 1e-10
