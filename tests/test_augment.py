"""Augmentation: exact geometry on test patterns, fusion order, ranges, seeding, specs, preview."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fixtures_data import make_tiny
from PIL import Image
from scipy import ndimage

from deepconvnet.cli import main
from deepconvnet.data import mnist
from deepconvnet.data.augment import (
    PRESETS,
    Compose,
    Elastic,
    RandomAffine,
    RandomCrop,
    RandomErasing,
    RandomFlip,
    Warp,
    affine_matrices,
    augmented_variants,
    gaussian_matrix,
    identity_grid,
    parse_augment,
    sample,
    sample_reference,
    warp_affine,
)
from deepconvnet.data.loader import BatchLoader
from deepconvnet.errors import DeepConvNetError
from deepconvnet.plots import DPI


def pattern(n: int = 3, size: int = 28, seed: int = 0) -> np.ndarray:
    """Asymmetric float32 test images (N, 1, size, size) in [0, 1], zero border like MNIST."""
    x = np.zeros((n, 1, size, size), np.float32)
    x[:, :, 4:-4, 4:-4] = np.random.default_rng(seed).random((n, 1, size - 8, size - 8))
    return x


def shifted(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``np.roll`` with zero fill instead of wrap-around."""
    out = np.roll(x, (rows, cols), axis=(-2, -1))
    if rows > 0:
        out[..., :rows, :] = 0
    elif rows < 0:
        out[..., rows:, :] = 0
    if cols > 0:
        out[..., :cols] = 0
    elif cols < 0:
        out[..., cols:] = 0
    return out


class Fixed(Warp):
    """A deterministic linear warp (the same matrix for every image), to test fusion."""

    def __init__(self, **params):
        self.params = params

    def matrices(self, rng, n, height, width):
        return np.repeat(affine_matrices(height, width, **self.params), n, axis=0)


class FixedField(Warp):
    """A deterministic non-linear warp: every pixel moves by a given whole-pixel displacement."""

    linear = False

    def __init__(self, d_rows: int, d_cols: int):
        self.d = (d_rows, d_cols)

    def coordinates(self, rng, n, height, width):
        grid = np.indices((height, width), dtype=np.float64)
        grid = grid - np.array(self.d, dtype=np.float64)[:, None, None]
        return np.repeat(grid[:, None], n, axis=1)


# --------------------------------------------------------------------------- exact geometry


def test_zero_rotation_and_shift_are_identity():
    x = pattern()
    identity = parse_augment("rotate=0,shift=0,scale=0,shear=0")
    np.testing.assert_allclose(identity(x, np.random.default_rng(1)), x, atol=1e-6)
    np.testing.assert_allclose(warp_affine(x, affine_matrices(28, 28)), x, atol=1e-6)


@pytest.mark.parametrize("quarter_turns", [1, 2, 3, -1])
def test_rotation_by_quarter_turns_matches_rot90(quarter_turns):
    x = pattern()
    rotated = warp_affine(x, affine_matrices(28, 28, angle_deg=90 * quarter_turns))
    np.testing.assert_allclose(rotated, np.rot90(x, quarter_turns, axes=(2, 3)), atol=1e-6)


@pytest.mark.parametrize(("rows", "cols"), [(3, 0), (0, -2), (-4, 5), (1, 1)])
def test_whole_pixel_shift_matches_zero_filled_roll(rows, cols):
    x = pattern()
    out = warp_affine(x, affine_matrices(28, 28, shift_rows=rows, shift_cols=cols))
    np.testing.assert_allclose(out, shifted(x, rows, cols), atol=1e-6)


def test_half_pixel_shift_is_the_average_of_neighbours():
    x = pattern()
    out = warp_affine(x, affine_matrices(28, 28, shift_cols=0.5))
    expected = (x + shifted(x, 0, 1)) / 2
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_zoom_by_two_about_the_centre():
    # On a 4x4 image the centre is (1.5, 1.5); output pixel (1, 1) reads input (1.25, 1.25).
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) / 15
    out = warp_affine(x, affine_matrices(4, 4, scale=2.0))
    expected = ndimage.map_coordinates(x[0, 0], [[1.25], [1.25]], order=1)[0]
    assert out[0, 0, 1, 1] == pytest.approx(expected, abs=1e-6)


def test_matrices_differ_per_image_in_one_batch():
    x = np.repeat(pattern(1), 3, axis=0)
    out = warp_affine(x, affine_matrices(28, 28, angle_deg=[0, 90, 180]))
    np.testing.assert_allclose(out[0], x[0], atol=1e-6)
    np.testing.assert_allclose(out[1], np.rot90(x[1], 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out[2], np.rot90(x[2], 2, axes=(1, 2)), atol=1e-6)


# --------------------------------------------------------------------------- fusion


def test_fused_linear_warps_equal_applying_them_one_by_one():
    x, rng = pattern(), np.random.default_rng(0)
    fused = Compose([Fixed(angle_deg=90), Fixed(shift_rows=3, shift_cols=-1)])(x, rng)
    one_by_one = shifted(np.rot90(x, 1, axes=(2, 3)), 3, -1)
    np.testing.assert_allclose(fused, one_by_one, atol=1e-6)


def test_elastic_after_affine_fuses_in_the_right_order():
    # A displacement field that moves every pixel by (2, -3) is a shift; after a rot90 it must act
    # on the rotated image, not rotate with it.
    x, rng = pattern(), np.random.default_rng(0)
    fused = Compose([Fixed(angle_deg=90), FixedField(2, -3)])(x, rng)
    one_by_one = shifted(np.rot90(x, 1, axes=(2, 3)), 2, -3)
    np.testing.assert_allclose(fused, one_by_one, atol=1e-6)


def test_a_warp_after_elastic_starts_a_new_interpolation():
    x, rng = pattern(), np.random.default_rng(0)
    out = Compose([FixedField(1, 0), Fixed(angle_deg=90)])(x, rng)
    np.testing.assert_allclose(out, np.rot90(shifted(x, 1, 0), 1, axes=(2, 3)), atol=1e-6)


def test_random_crop_is_a_whole_pixel_shift_within_the_padding():
    x = pattern(8)
    out = RandomCrop(2)(x, np.random.default_rng(3))
    seen = set()
    for image, result in zip(x, out, strict=True):
        matches = [
            (r, c)
            for r in range(-2, 3)
            for c in range(-2, 3)
            if np.allclose(result, shifted(image, r, c), atol=1e-6)
        ]
        assert matches, "a crop must equal a zero-filled shift by at most the padding"
        seen.add(matches[0])
    assert len(seen) > 1


def test_flip_mirrors_some_images_and_leaves_the_rest():
    x = pattern(16)
    out = RandomFlip("h")(x, np.random.default_rng(0))
    mirrored = [np.allclose(o, i[..., ::-1], atol=1e-6) for o, i in zip(out, x, strict=True)]
    kept = [np.allclose(o, i, atol=1e-6) for o, i in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert any(mirrored) and any(kept)


# --------------------------------------------------------------------------- elastic, erasing


def test_elastic_with_alpha_zero_is_identity():
    x = pattern()
    np.testing.assert_allclose(Elastic(0.0, 4.0)(x, np.random.default_rng(0)), x, atol=1e-6)
    np.testing.assert_allclose(parse_augment("elastic=0:4")(x, np.random.default_rng(0)), x, 1e-6)


def test_gaussian_matrix_is_scipys_gaussian_filter_with_zero_padding():
    field = np.random.default_rng(0).uniform(-1, 1, (28, 28))
    g = gaussian_matrix(28, 4.0)
    expected = ndimage.gaussian_filter(field, 4.0, mode="constant")
    np.testing.assert_allclose(g @ field @ g.T, expected, atol=1e-12)


def test_elastic_moves_pixels_by_about_simards_amount():
    x = pattern(32)
    out = Elastic()(x, np.random.default_rng(0))
    assert not np.allclose(out, x, atol=1e-3)
    # A smooth field: neighbouring displacements nearly equal, so mass is roughly conserved.
    assert out.sum() == pytest.approx(x.sum(), rel=0.1)


@pytest.mark.parametrize(("alpha", "sigma"), [(34.0, 4.0), (8.0, 2.0)])
def test_elastic_displacements_have_the_size_simards_definition_gives(alpha, sigma):
    """Uniform [-1, 1] noise (variance 1/3) smoothed by a 2-D Gaussian of width sigma keeps
    1 / (4 pi sigma^2) of its variance, so away from the edges each axis moves by
    alpha * sqrt(1/3) / (2 sqrt(pi) sigma) pixels rms: 1.38 for Simard's 34 and 4."""
    n, side = 200, 64
    moved = Elastic(alpha, sigma).coordinates(np.random.default_rng(0), n, side, side)
    grid = identity_grid(n, side, side)[:, :2].transpose(1, 0, 2).reshape(2, n, side, side)
    inner = (moved - grid)[:, :, 16:48, 16:48]
    rms = np.sqrt((inner**2).mean(axis=(1, 2, 3)))
    expected = alpha * np.sqrt(1 / 3) / (2 * np.sqrt(np.pi) * sigma)
    assert rms == pytest.approx([expected, expected], rel=0.05)


def forward_maps(augment: str, n: int = 20_000) -> np.ndarray:
    """The input -> output maps (n, 3, 3) that ``augment``'s one RandomAffine draws on 28x28."""
    (affine,) = parse_augment(augment).transform.transforms
    assert isinstance(affine, RandomAffine)
    return np.linalg.inv(affine.matrices(np.random.default_rng(0), n, 28, 28))


def test_affine_draws_span_exactly_the_ranges_the_spec_gives():
    """rotate=DEG is +-DEG degrees, shift=F is +-F of the image (28 px: +-2.8), scale=F a zoom
    in [1 - F, 1 + F], shear=DEG +-DEG degrees: each uniform over its range."""
    angles = np.degrees(np.arctan2(*forward_maps("rotate=15")[:, [1, 0], 0].T))
    shifts = forward_maps("shift=0.1")[:, :2, 2]
    zooms = forward_maps("scale=0.15")[:, 0, 0]
    shears = np.degrees(np.arctan(forward_maps("shear=10")[:, 1, 0]))
    for values, low, high in [
        (angles, -15, 15),
        (shifts[:, 0], -2.8, 2.8),
        (shifts[:, 1], -2.8, 2.8),
        (zooms, 0.85, 1.15),
        (shears, -10, 10),
    ]:
        assert low <= values.min() < low + 0.01 * (high - low)
        assert high - 0.01 * (high - low) < values.max() <= high
        assert values.std() == pytest.approx((high - low) / np.sqrt(12), rel=0.02)  # uniform


def test_random_erasing_blanks_one_rectangle_per_chosen_image():
    x = np.ones((20, 1, 28, 28), np.float32)
    out = RandomErasing(1.0)(x, np.random.default_rng(0))
    for image in out[:, 0]:
        rows, cols = np.nonzero(image == 0)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width, "the erased pixels form one full rectangle"
        assert 0.01 <= len(rows) / 784 <= 0.4
    untouched = RandomErasing(0.0)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(untouched, x)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    "spec",
    [*PRESETS, "shear=20,crop=3,erase=0.5", "flip=hv,elastic", "rotate=180,scale=0.9,shift=0.5"],
)
def test_output_is_float32_in_unit_range_with_same_shape(spec):
    x = np.random.default_rng(0).random((50, 1, 28, 28), dtype=np.float32)
    x[:10] = (x[:10] > 0.5).astype(np.float32)  # saturated strokes, like MNIST
    out = parse_augment(spec)(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out, x)


def test_channels_of_an_image_get_the_same_warp():
    x = np.repeat(pattern(4), 3, axis=1)
    out = parse_augment("rotate=30,shift=0.1,elastic")(x, np.random.default_rng(0))
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_array_equal(out[:, 0], out[:, 2])


@pytest.mark.parametrize("spec", [*PRESETS, "crop=2,flip=h,erase=0.5"])
def test_seeded_determinism(spec):
    augment, x = parse_augment(spec), pattern(8)
    first = augment(x, np.random.default_rng(42))
    np.testing.assert_array_equal(first, augment(x, np.random.default_rng(42)))
    assert not np.array_equal(first, augment(x, np.random.default_rng(43)))


def test_input_is_not_modified():
    x = pattern(4)
    before = x.copy()
    parse_augment("standard,erase=1")(x, np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)


def test_labels_are_untouched_by_the_loader_with_augmentation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 30).astype(np.uint8)
    kwargs = {"batch_size": 7, "seed": 5}
    plain = BatchLoader(images, labels, **kwargs)
    augmented = BatchLoader(images, labels, augment=parse_augment("elastic"), **kwargs)
    for (x0, t0), (x1, t1) in zip(plain.epoch(0), augmented.epoch(0), strict=True):
        np.testing.assert_array_equal(t0, t1)
        assert x1.shape == x0.shape and not np.array_equal(x1, x0)


def test_augmented_variants_shape_and_independence():
    x = pattern(3)
    variants = augmented_variants(x, parse_augment("standard"), 4, np.random.default_rng(0))
    assert variants.shape == (3, 4, 1, 28, 28)
    assert not np.array_equal(variants[0, 0], variants[0, 1])


# --------------------------------------------------------------------------- specs


def test_presets_expand_to_documented_specs():
    assert parse_augment("standard").spec == "rotate=15,shift=0.1,scale=0.15"
    assert parse_augment("elastic").spec == "rotate=5,shift=0.05,scale=0.05,elastic=34:4"
    assert parse_augment("standard,erase=0.5").spec == "rotate=15,shift=0.1,scale=0.15,erase=0.5"
    # Inside a list, the bare word is the elastic item (Simard's defaults), not the preset.
    assert parse_augment("rotate=5,elastic").spec == "rotate=5,elastic=34:4"
    for empty in (None, "", "none", " NONE "):
        assert parse_augment(empty) is None
    assert not any(parse_augment(p).flips for p in PRESETS)
    assert parse_augment("flip=h").flips


@pytest.mark.parametrize(
    "spec",
    [
        "erase=0.25,scale=0.2,rotate=12.5",
        "elastic=20:3.5",
        "crop=4,flip=vh,shear=7",
        "shift=0.123456789",
        "standard",
    ],
)
def test_spec_round_trip(spec):
    augment = parse_augment(spec)
    again = parse_augment(augment.spec)
    assert again.spec == augment.spec and again.settings == augment.settings
    x = pattern(4)
    np.testing.assert_array_equal(
        augment(x, np.random.default_rng(0)), again(x, np.random.default_rng(0))
    )


def test_canonical_spec_orders_keys_and_prints_numbers_plainly():
    assert parse_augment("erase=0.5, rotate=15.0,crop=2").spec == "rotate=15,crop=2,erase=0.5"


@pytest.mark.parametrize(
    ("spec", "culprit"),
    [
        ("rotate=15,spin=3", "spin=3"),
        ("rotate=abc", "rotate=abc"),
        ("rotate=200", "rotate=200"),
        ("shift=-0.1", "shift=-0.1"),
        ("scale=1", "scale=1"),
        ("erase=1.5", "erase=1.5"),
        ("crop=0", "crop=0"),
        ("crop=1.5", "crop=1.5"),
        ("crop=²", "crop=²"),  # isdigit() but not int()-able
        ("flip=x", "flip=x"),
        ("elastic=34", "elastic=34"),
        ("elastic=34:0", "elastic=34:0"),
        ("elastic=34:1e308", "sigma must be in [0.1, 28]"),  # overflowed gaussian_matrix
        ("elastic=34:1e-300", "sigma must be in [0.1, 28]"),
        ("elastic=1e308:4", "alpha must be in [0, 1000]"),  # NaN coordinates, blank image
        ("elastic=1001:4", "alpha must be in [0, 1000]"),
        ("elastic=-1:4", "alpha must be in [0, 1000]"),
        ("elastic=inf:4", "not a finite number"),
        ("elastic=34:nan", "not a finite number"),
        ("crop=15", "[1, 14]"),
        ("crop=99999999999999999999999", "[1, 14]"),  # overflowed the random integers
        ("rotate=nan", "rotate=nan"),
        ("rotate=", "rotate="),
        ("rotate=5,rotate=6", "rotate"),
        ("standard,rotate=5", "rotate"),
        ("rotate=5,,shift=0.1", "empty"),
        ("none,rotate=5", "none"),
    ],
)
def test_bad_specs_raise_one_line_naming_the_item(spec, culprit):
    with pytest.raises(DeepConvNetError) as info:
        parse_augment(spec)
    message = str(info.value)
    assert "\n" not in message and culprit in message


# --------------------------------------------------------------------------- augment-preview


def test_augment_preview_writes_png_of_the_expected_size(tmp_path, monkeypatch):
    for var in ("DEEPCONVNET_DATA", "DEEPCONVNET_OFFLINE", "DEEPCONVNET_CACHE"):
        monkeypatch.delenv(var, raising=False)
    data = make_tiny(tmp_path, name="mnist")
    monkeypatch.setitem(mnist.DATASETS, "mnist", data.spec)
    out = tmp_path / "preview.png"
    argv = ["augment-preview", "--out", str(out), "--data-dir", str(data.idx_dir)]
    assert main([*argv, "--count", "3", "--variants", "5", "--augment", "elastic"]) == 0
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        width, height = image.size
    # figsize (0.9 * (variants + 1), 0.9 * rows + 0.5) inches, trimmed tight.
    assert width == pytest.approx(0.9 * 6 * DPI, rel=0.2)
    assert height == pytest.approx((0.9 * 3 + 0.5) * DPI, rel=0.2)
    wide = tmp_path / "wide.png"
    assert main(["augment-preview", "--out", str(wide), "--data-dir", str(data.idx_dir),
                 "--count", "2", "--variants", "10"]) == 0  # fmt: skip
    with Image.open(wide) as image:
        assert image.size[0] > 1.5 * width and image.size[1] < height


def test_bounds_are_accepted_and_negative_zero_reads_as_zero():
    x = pattern(2)
    for spec in ("elastic=1000:0.1", "elastic=0:28", "crop=14"):
        out = parse_augment(spec)(x, np.random.default_rng(0))
        assert out.shape == x.shape and np.isfinite(out).all()
    # -0 passed the range check but rng.uniform(0, -0) raised (an internal error).
    zero = parse_augment("shift=-0,rotate=-0,elastic=-0:4")
    assert zero.spec == "rotate=0,shift=0,elastic=0:4"
    np.testing.assert_allclose(zero(x, np.random.default_rng(0)), x, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "why"),
    [("elastic=34:1e308", "sigma must be in"), ("elastic=1e308:4", "alpha must be in")],
)
def test_augment_preview_refuses_unbounded_elastic_in_one_line(spec, why, tmp_path, capsys):
    out = tmp_path / "x.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it used to print a page of NumPy RuntimeWarnings
        assert main(["augment-preview", "--out", str(out), "--augment", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and spec in err and why in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--count", "100000", "--variants", "1"], "--count: must be at most 50"),
        (["--count", "51"], "--count: must be at most 50"),
        (["--variants", "21"], "--variants: must be at most 20"),
        (["--variants", "0"], "--variants: must be a positive integer"),
    ],
)
def test_augment_preview_refuses_a_huge_grid_while_parsing(argv, why, tmp_path, capsys):
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it before any data is read
        main(["augment-preview", "--out", str(out), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and why in err
    assert not out.exists()


def test_augment_preview_help_states_the_grid_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["augment-preview", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1 to 50" in text and "1 to 20" in text


def test_augment_preview_rejects_a_bad_spec(tmp_path, capsys):
    assert main(["augment-preview", "--out", str(tmp_path / "x.png"), "--augment", "spin=1"]) == 2
    err = capsys.readouterr().err
    assert "spin=1" in err and err.count("elastic") == 1  # a key and a preset, named once
    assert not (tmp_path / "x.png").exists()


def test_fast_sampling_matches_scipy_reference_inside_outside_and_on_the_edges():
    rng = np.random.default_rng(21)
    x = rng.random((6, 2, 9, 7), dtype=np.float32)
    coords = np.stack([rng.uniform(-4, 12, (6, 9, 7)), rng.uniform(-4, 10, (6, 9, 7))])
    edges = np.array([[-1.0, -0.5, 8.5], [6.0, 6.5, -1.0]])  # on the edges, half a pixel out
    coords[:, :, 0, :3] = edges[:, None, :]
    coords[:, :, 1, 0] = np.array([1e9, -1e9])[:, None]  # far away: zero
    got = sample(x, coords)
    want = sample_reference(x, coords)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert (got[:, :, 1, 0] == 0).all()
    integer = np.stack(np.meshgrid(np.arange(9.0), np.arange(7.0), indexing="ij"))
    identity = np.broadcast_to(integer[:, None], (2, 6, 9, 7))
    np.testing.assert_array_equal(sample(x, identity), x)  # whole pixels: exact copies


@pytest.mark.parametrize(("spec", "warned"), [("flip=h", True), ("rotate=10", False)])
def test_flipping_digits_warns_in_every_command(spec, warned, capsys):
    """train and augment-preview share one warning: a mirrored digit is another label."""
    from deepconvnet.cli import build_parser
    from deepconvnet.cli.train import config_from_args

    args = build_parser().parse_args(["train", "--augment", spec])
    config_from_args(args)
    assert ("a mirrored 2 is no 2" in capsys.readouterr().err) is warned
