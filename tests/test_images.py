"""Reading user images and preparing them as MNIST digits were made."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageDraw

from deepconvnet.errors import ImageError
from deepconvnet.images import (
    MAX_PIXELS,
    ImageTooLargeError,
    digit_png_bytes,
    load_digit,
    pixels_to_digit,
    prepare_digit,
    read_image,
    save_digit_png,
)


def draw_seven(size: tuple[int, int], *, dark_on_light: bool, supersample: int = 1) -> Image.Image:
    """A '7' whose size follows the image's; drawn at ``supersample`` x and box-filtered down."""
    width, height = size[0] * supersample, size[1] * supersample
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    img = Image.new("L", (width, height), paper)
    side = 0.6 * min(width, height)
    x0, y0 = (width - 0.6 * side) / 2, (height - side) / 2
    points = [(x0, y0), (x0 + 0.6 * side, y0), (x0 + 0.2 * side, y0 + side)]
    ImageDraw.Draw(img).line(points, fill=ink, width=max(1, int(0.12 * side)))
    return img.resize(size, Image.Resampling.BOX) if supersample > 1 else img


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(digit.shape)
    return (rows * digit).sum() / digit.sum(), (cols * digit).sum() / digit.sum()


REFERENCE = prepare_digit(np.asarray(draw_seven((300, 200), dark_on_light=True)))


# -- the MNIST recipe ---------------------------------------------------------------------------
def test_large_dark_on_light_and_small_light_on_dark_give_the_same_digit():
    small = prepare_digit(np.asarray(draw_seven((28, 28), dark_on_light=False, supersample=10)))
    assert REFERENCE.shape == small.shape == (28, 28)
    assert REFERENCE.dtype == np.float32
    assert np.abs(REFERENCE - small).mean() < 0.03
    assert np.corrcoef(REFERENCE.ravel(), small.ravel())[0, 1] > 0.95


def test_prepared_digit_is_white_on_black_centred_and_fitted_to_20_pixels():
    digit = REFERENCE
    assert digit.max() == pytest.approx(1.0, abs=0.05)
    # Centring by mass moves a '7' down (its mass is in the top bar), as it moved MNIST's.
    assert digit[0].max() == digit[:, 0].max() == digit[:, -1].max() == 0
    assert digit[-1].sum() < 0.02 * digit.sum()
    np.testing.assert_allclose(centre_of_mass(digit), (14.0, 14.0), atol=0.05)
    rows = np.flatnonzero((digit > 0.2).any(axis=1))
    assert 19 <= rows[-1] - rows[0] + 1 <= 21  # the taller side fills the 20-pixel box


def test_aspect_ratio_is_kept():
    bar = np.zeros((400, 400))
    bar[100:300, 180:220] = 1.0  # a 200x40 bar: 5:1
    digit = prepare_digit(bar)
    rows = np.flatnonzero((digit > 0.5).any(axis=1))
    cols = np.flatnonzero((digit > 0.5).any(axis=0))
    assert rows[-1] - rows[0] + 1 in (19, 20, 21)  # sub-pixel centring blurs an edge row
    assert cols[-1] - cols[0] + 1 in (3, 4, 5)


@pytest.mark.parametrize(
    ("fmt", "mode", "kwargs"),
    [
        ("PNG", "L", {}),
        ("PNG", "RGB", {}),
        ("JPEG", "RGB", {"quality": 95}),
        ("BMP", "RGB", {}),
        ("GIF", "P", {}),
        ("TIFF", "L", {}),
        ("PNG", "I;16", {}),
    ],
)
def test_every_format_and_mode_gives_the_same_digit(tmp_path, fmt, mode, kwargs):
    img = draw_seven((300, 200), dark_on_light=True)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    path = tmp_path / f"seven.{fmt.lower()}"
    path.write_bytes(encode(img, fmt, **kwargs))
    digit = load_digit(path)
    assert np.abs(digit - REFERENCE).mean() < 0.02


def test_stroke_on_a_transparent_canvas_is_seen_whatever_its_colour():
    alpha = np.asarray(draw_seven((300, 200), dark_on_light=False))
    for ink in (0, 255):
        rgba = np.zeros((200, 300, 4), np.uint8)
        rgba[..., :3] = ink
        rgba[..., 3] = alpha
        digit = load_digit(encode(Image.fromarray(rgba), "PNG"))
        assert np.abs(digit - REFERENCE).mean() < 0.02


def test_photo_like_paper_noise_is_removed():
    rng = np.random.default_rng(0)
    grey = np.asarray(draw_seven((300, 200), dark_on_light=True), dtype=np.float64) / 255
    photo = np.clip(0.15 + 0.7 * grey + rng.normal(0, 0.02, grey.shape), 0, 1)  # grey paper
    digit = prepare_digit(photo)
    assert np.abs(digit - REFERENCE).mean() < 0.03


def test_raw_pixels_are_checked_and_used_as_given():
    pixels = np.random.default_rng(1).random((28, 28))
    np.testing.assert_array_equal(pixels_to_digit(pixels.tolist()), pixels.astype(np.float32))
    for bad, words in [
        (np.zeros((28, 29)), "expected shape 28x28, got 28x29"),
        (np.full((28, 28), 1.5), "values must be in [0, 1] (found 1.5 to 1.5)"),
        (np.zeros((28, 28)), "no digit found (the pixels are blank or uniform)"),
        (np.full((28, 28), 0.5), "no digit found (the pixels are blank or uniform)"),
        (np.full((28, 28), np.nan), "values must be finite numbers"),
        ([[0.0] * 28] * 27 + [[0.0] * 3], "expected 28x28 numbers, got rows of different lengths"),
        ("seven", "expected shape 28x28, got a string"),
        ({"a": 1}, "expected shape 28x28, got an object"),
        ([[None] * 28] * 28, "expected 28x28 numbers, got values that are not numbers"),
        (None, "expected shape 28x28, got null"),
        (7, "expected shape 28x28, got a number"),
        (True, "expected shape 28x28, got a boolean"),
        ("7", "expected shape 28x28, got a string"),
        ([], "expected shape 28x28, got 0 (empty)"),
    ]:
        with pytest.raises(ImageError) as info:
            pixels_to_digit(bad)
        assert str(info.value).startswith(f"pixels: {words}")


def test_save_digit_png_writes_the_exact_pixels(tmp_path):
    path = save_digit_png(tmp_path / "out" / "seen.png", REFERENCE)
    assert path.read_bytes() == digit_png_bytes(REFERENCE)
    back = np.asarray(Image.open(path))
    np.testing.assert_array_equal(back, np.rint(REFERENCE * 255).astype(np.uint8))
    assert list((tmp_path / "out").iterdir()) == [path]  # no temporary left behind


# -- refusals -----------------------------------------------------------------------------------
def test_non_images_truncated_and_empty_files_are_image_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("a seven\n")
    png = encode(draw_seven((300, 200), dark_on_light=True), "PNG")
    cases = {
        text: "not an image",
        tmp_path / "missing.png": "no such file",
        tmp_path: "is a directory",
    }
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    cases[tmp_path / "cut.png"] = "truncated or corrupt"
    (tmp_path / "empty.png").write_bytes(b"")
    cases[tmp_path / "empty.png"] = "empty file"
    for path, words in cases.items():
        with pytest.raises(ImageError) as info:
            load_digit(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and words in message and "\n" not in message


@pytest.mark.parametrize(
    ("orientation", "upright"),
    [
        (1, lambda a: a),
        (3, lambda a: np.rot90(a, 2)),
        (6, lambda a: np.rot90(a, -1)),
        (8, lambda a: np.rot90(a, 1)),
        (2, np.fliplr),
    ],
)
def test_exif_orientation_is_applied_as_a_phone_records_it(orientation, upright):
    """A phone stores the sensor's pixels and an EXIF tag saying how to turn them (6: a
    quarter turn clockwise); a digit read as stored would lie on its side."""
    stored = np.zeros((30, 20), np.uint8)
    stored[2:6, 3:15] = 255  # an asymmetric mark: top left, wider than tall
    stored[10:28, 3:5] = 128
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation  # Orientation
    read = read_image(encode(image, "PNG", exif=exif))
    np.testing.assert_array_equal(read, upright(stored).astype(np.float32) / 255)


@pytest.mark.parametrize("size", [(40, 40), (5000, 1), (1, 5000), (10, 300), (300, 10)])
def test_blank_images_have_no_digit(size):
    """Thin strips too: cells cut short by the edge, or one or two columns of them, once bent
    the fitted paper at the image's edges, and a white 10x300 strip was read as a 1 (94%)."""
    for value in (0, 255, 128):
        with pytest.raises(ImageError, match="no digit found"):
            load_digit(encode(Image.new("L", size, value), "PNG"), name="blank.png")
    shaded = np.linspace(0.9, 0.6, size[0])[None, :] * np.ones((size[1], 1))  # a lamp's fall-off
    with pytest.raises(ImageError, match="no digit found"):
        prepare_digit(shaded)


def high_depth(grey8: np.ndarray, kind: str) -> bytes:
    """8-bit levels as the same levels in a 16-bit PNG, a 32-bit integer or a float TIFF."""
    if kind == "16-bit":
        return encode(Image.fromarray(grey8.astype(np.uint16) * 257), "PNG")
    if kind == "32-bit":
        return encode(Image.fromarray(grey8.astype(np.int32) * 257), "TIFF")
    return encode(Image.fromarray(grey8.astype(np.float32) / 255), "TIFF")


@pytest.mark.parametrize("kind", ["16-bit", "32-bit", "float"])
def test_high_depth_images_are_judged_as_their_8_bit_equivalent(kind):
    """A real digit reads the same; a near-flat image (one level brighter, or faint noise) is
    refused as blank, as in 8 bits, rather than stretched to full contrast."""
    seven = np.asarray(draw_seven((300, 200), dark_on_light=True))
    eight_bit = load_digit(encode(Image.fromarray(seven), "PNG"))
    np.testing.assert_allclose(load_digit(high_depth(seven, kind)), eight_bit, atol=1e-6)
    flat = np.full((40, 40), 117, np.uint8)
    flat[20, 20] = 118
    noise = np.random.default_rng(2).integers(117, 120, (40, 40)).astype(np.uint8)
    for grey8 in (flat, noise):
        with pytest.raises(ImageError) as eight:
            load_digit(encode(Image.fromarray(grey8), "PNG"), name="flat")
        with pytest.raises(ImageError) as deep:
            load_digit(high_depth(grey8, kind), name="flat")
        assert (
            str(deep.value)
            == str(eight.value)
            == ("flat: no digit found (the image is blank or uniform)")
        )


def test_uniform_16_bit_scan_levels_are_blank():
    """The reviewer's case: 30000 with one pixel at 30001, or noise 30000-30009."""
    flat = np.full((40, 40), 30000, np.uint16)
    flat[20, 20] = 30001
    noise = np.random.default_rng(3).integers(30000, 30010, (40, 40)).astype(np.uint16)
    for pixels in (flat, noise):
        with pytest.raises(ImageError, match="no digit found"):
            load_digit(encode(Image.fromarray(pixels), "PNG"))


def test_over_large_images_are_refused_before_decoding():
    bomb = encode(Image.new("1", (8000, 8000)), "PNG")  # 64 Mpx in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match=r"bomb.png: image too large \(8000x8000"):
        read_image(bomb, name="bomb.png")
    small = encode(draw_seven((300, 200), dark_on_light=True), "PNG")
    with pytest.raises(ImageTooLargeError, match="the limit is 50,000"):
        read_image(small, max_pixels=50_000)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` 1-bit pixels, with an empty IDAT (no pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_an_image_over_twice_pillows_limit_is_refused_in_our_words():
    """Pillow refuses these itself on open; the message was its own ('could be decompression
    bomb DOS attack') without the limit that applies here."""
    with pytest.raises(ImageTooLargeError) as raised:
        read_image(png_header_only(20_000, 20_000), name="huge.png")
    assert str(raised.value) == (
        f"huge.png: image too large (400,000,000 pixels; the limit is {MAX_PIXELS:,})"
    )


@pytest.mark.filterwarnings("error")  # Pillow's DecompressionBombWarning would fail the test
def test_images_over_pillows_warning_limit_get_only_our_one_line_error(tmp_path):
    path = tmp_path / "huge.png"  # 100 Mpx: over Pillow's 89 MP warning, under its 179 MP error
    Image.new("1", (10000, 10000)).save(path)
    with pytest.raises(ImageTooLargeError) as info:
        read_image(path)
    assert str(info.value) == (
        f"{path}: image too large (10000x10000 = 100,000,000 pixels; the limit is 40,000,000)"
    )


# -- property-based: nothing but ImageError escapes ---------------------------------------------
VALID = {
    fmt: encode(draw_seven((40, 30), dark_on_light=True).convert("RGB"), fmt)
    for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF")
}


@st.composite
def mutated_images(draw):
    data = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt TIFF/EXIF data
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), mutated_images()))
def test_arbitrary_bytes_raise_only_image_error(data):
    try:
        digit = load_digit(data)
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert digit.shape == (28, 28) and digit.dtype == np.float32
        assert np.isfinite(digit).all() and digit.min() >= 0 and digit.max() <= 1


ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, bool]
)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=ARRAY_DTYPES,
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12),
    )
)
def test_arbitrary_arrays_raise_only_image_error(array):
    try:
        digit = prepare_digit(array)
    except ImageError as exc:
        assert "\n" not in str(exc)
    else:
        assert digit.shape == (28, 28) and digit.dtype == np.float32
        assert np.isfinite(digit).all() and digit.min() >= 0 and digit.max() <= 1


# -- what reviewers found -----------------------------------------------------------------------
def test_dark_ink_on_dim_paper_is_read_not_called_blank():
    """An underexposed photo: ink at 0.05 on paper at 0.3-0.45. The ink is whichever extreme
    lies farther from the paper, so dim paper no longer reads as light ink on black."""
    grey = np.asarray(draw_seven((300, 200), dark_on_light=True), dtype=np.float64) / 255
    for paper in (0.3, 0.4, 0.45):
        photo = 0.05 + (paper - 0.05) * grey
        digit = prepare_digit(photo, name="dim")
        assert np.abs(digit - REFERENCE).mean() < 0.02


def soft_edged_dark_seven() -> Image.Image:
    """A dark 7 on white whose edges fade out over many pixels (a blurred scan or an upscaled
    MNIST digit): keying out pure white leaves more light fringe than dark stroke opaque."""
    from PIL import ImageFilter

    return draw_seven((300, 200), dark_on_light=True).filter(ImageFilter.GaussianBlur(8))


@pytest.mark.parametrize(
    ("fmt", "make"),
    [
        ("PNG", lambda img: (img.convert("P"), {"transparency": 255})),
        ("GIF", lambda img: (img, {"transparency": 255})),
        ("PNG", lambda img: (img.convert("RGB"), {"transparency": (255, 255, 255)})),
    ],
    ids=["palette-png", "gif", "rgb-png"],
)
def test_a_transparent_colour_key_reads_as_the_opaque_image(fmt, make):
    """Keying out the white paper leaves the anti-aliased fringe opaque; the stroke's core, not
    that fringe, decides the ink's shade, so the digit is the opaque image's, not an outline."""
    img = soft_edged_dark_seven()
    opaque = load_digit(encode(img, "PNG"))
    keyed, kwargs = make(img)
    np.testing.assert_allclose(load_digit(encode(keyed, fmt, **kwargs)), opaque, atol=1e-6)


def test_a_key_sharing_the_inks_colour_still_shows_the_stroke():
    """A binary canvas saved as GIF: ink and transparent background are both black."""
    stroke = np.asarray(draw_seven((300, 200), dark_on_light=False)) > 127
    canvas = Image.fromarray(stroke.astype(np.uint8), mode="P")
    canvas.putpalette([0, 0, 0] * 256)
    digit = load_digit(encode(canvas, "GIF", transparency=0))
    assert np.abs(digit - REFERENCE).mean() < 0.03


@pytest.mark.parametrize("kind", ["16-bit", "float"])
def test_large_high_depth_images_are_reduced_before_any_float_copy(kind):
    """A 3000x2000 high-depth image used to become two float64 copies (96 MB) before being
    subsampled; now Pillow reduces it first, as it reduces 8-bit images, with the same digit."""
    import tracemalloc

    seven = np.asarray(draw_seven((3000, 2000), dark_on_light=True))
    data = high_depth(seven, kind)
    eight_bit = load_digit(encode(Image.fromarray(seven), "PNG"))
    tracemalloc.start()
    try:
        digit = load_digit(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20  # NumPy's allocations; the reduced image is 1000x667
    assert np.abs(digit - eight_bit).mean() < 0.005


def test_a_thin_stroke_peaks_at_full_white_as_every_mnist_digit_does():
    """A 7 drawn with a stroke 1% of its height is greyed by the fit into 20x20 (its peak was
    about 0.3); MNIST's digits all peak at 254-255, so the fitted digit is brought up to 1."""
    img = Image.new("L", (1000, 1000), 255)
    points = [(300, 200), (700, 200), (420, 800)]
    ImageDraw.Draw(img).line(points, fill=0, width=10)
    digit = load_digit(encode(img, "PNG"))
    assert digit.max() >= 0.99
    rows = np.flatnonzero((digit > 0.2).any(axis=1))
    assert 19 <= rows[-1] - rows[0] + 1 <= 21


def test_a_glint_of_glare_does_not_outvote_a_faint_pencil_stroke():
    """Grey paper (0.7), a faint 7 (0.45) and a spot of glare at full white: the ink is the side
    of the paper with more contrast in all, not the single most extreme pixel. (The spot moves
    the fitted paper level by a few ten-thousandths.)"""
    grey = np.asarray(draw_seven((300, 200), dark_on_light=True), dtype=np.float64) / 255
    photo = 0.45 + (0.7 - 0.45) * grey
    clean = prepare_digit(photo)
    for spot in (1, 5):
        glared = photo.copy()
        glared[20 : 20 + spot, 30 : 30 + spot] = 1.0
        np.testing.assert_allclose(prepare_digit(glared), clean, atol=1e-3)


def test_a_32_bit_image_of_8_bit_values_is_read_as_8_bit():
    """A NumPy int array of 0-255 pixels saved as a 32-bit TIFF used to be scaled as 16-bit:
    too dark to be anything but blank. A 16-bit file keeps its range, dim or not."""
    seven = np.asarray(draw_seven((300, 200), dark_on_light=True))
    eight_bit = load_digit(encode(Image.fromarray(seven), "PNG"))
    as_int32 = encode(Image.fromarray(seven.astype(np.int32)), "TIFF")
    np.testing.assert_allclose(load_digit(as_int32), eight_bit, atol=1e-6)
    dim = (seven.astype(np.uint16) * 257) // 64  # a 16-bit file of values below 1024
    with pytest.raises(ImageError, match="no digit found"):
        load_digit(encode(Image.fromarray(dim), "PNG"))


def test_a_file_larger_than_any_allowed_image_is_refused_unread(tmp_path, monkeypatch):
    """/dev/zero used to be read until the OOM killer stopped the process."""
    import deepconvnet.images as images

    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    big = tmp_path / "big.png"
    big.write_bytes(encode(draw_seven((300, 200), dark_on_light=True), "PNG") + bytes(2000))
    with pytest.raises(ImageTooLargeError, match=r"big.png: more than 1,000 bytes"):
        load_digit(big)
    with pytest.raises(ImageTooLargeError, match="more than 1,000 bytes"):
        load_digit("/dev/zero")


@pytest.mark.parametrize("fmt", ["TIFF", "GIF"])
def test_a_multi_page_file_over_the_byte_limit_is_read_by_its_first_page(
    tmp_path, monkeypatch, fmt
):
    """Only the first frame is decoded, so the other pages must not make the file too large (the
    byte limit used to count them all). Bytes already in memory are still counted whole."""
    import deepconvnet.images as images

    seven = draw_seven((300, 200), dark_on_light=True)
    noise = np.random.default_rng(0).integers(0, 256, (600, 600), dtype=np.uint8)
    pages = [Image.fromarray(noise)] * 3
    path = tmp_path / f"pages.{fmt.lower()}"
    seven.save(path, format=fmt, save_all=True, append_images=pages)
    monkeypatch.setattr(images, "MAX_FILE_BYTES", path.stat().st_size // 4)
    assert len(encode(seven, fmt)) < images.MAX_FILE_BYTES < path.stat().st_size
    np.testing.assert_array_equal(load_digit(path), load_digit(encode(seven, "PNG")))
    with pytest.raises(ImageTooLargeError, match="more than"):
        load_digit(path.read_bytes())  # bytes in memory are all counted
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(path.stat().st_size))
    with pytest.raises(ImageError, match=r"corrupt\.tif: truncated or corrupt image"):
        load_digit(corrupt)


def test_a_damaged_tiff_is_one_error_and_no_warning():
    """Pillow warned in two lines (Corrupt EXIF data, Truncated File Read) before the error, and
    a file that begins as a TIFF was called "not an image"."""
    whole = encode(draw_seven((300, 200), dark_on_light=True), "TIFF")
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        for cut in (100, 16):
            with pytest.raises(ImageError, match=r"cut\.tif: truncated or corrupt image"):
                load_digit(whole[:cut], name="cut.tif")
        with pytest.raises(ImageError, match="text: not an image"):
            load_digit(b"II is no TIFF: just text", name="text")
    assert [str(w.message) for w in escaped] == []


def test_raw_pixels_must_be_numbers_not_strings_or_booleans():
    """The messages were 'values of type bool or bool' and 'values of type str96 or bool'."""
    mixed = [[True] * 27 + [0.5]] * 28  # NumPy makes these floats
    for bad, got in [
        ([["0.5"] * 28] * 28, "strings"),
        (np.ones((28, 28), dtype=bool), "true/false values"),
        (mixed, "true/false values"),
    ]:
        with pytest.raises(ImageError) as info:
            pixels_to_digit(bad)
        assert str(info.value) == f"pixels: expected 28x28 numbers, got {got}"


# -- photos of paper: shading and ruled lines ---------------------------------------------------
def paper_photo(light: np.ndarray, lines: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The reference 7 (300x200) as a photo: ink and paper reflectances under ``light``, paper
    lines (reflectance factors) where given, and sensor noise."""
    ink = 1 - np.asarray(draw_seven((300, 200), dark_on_light=True), dtype=np.float64) / 255
    paper = 0.9 * (np.ones_like(ink) if lines is None else lines)
    reflectance = paper * (1 - ink) + 0.1 * ink
    noise = np.random.default_rng(seed).normal(0, 0.015, ink.shape)
    return np.clip(light * reflectance + noise, 0, 1)


def vignette(corners: float) -> np.ndarray:
    """Light falling off with the squared distance from the middle, to ``corners`` there."""
    rows, cols = np.indices((200, 300))
    r2 = ((rows - 99.5) / 99.5) ** 2 + ((cols - 149.5) / 149.5) ** 2
    return 1 - (1 - corners) * r2 / 2


def side_light(falloff: float) -> np.ndarray:
    return np.broadcast_to(np.linspace(1, 1 - falloff, 300), (200, 300))


def ruled(pitch: int = 20, width: int = 2, shade: float = 0.6, both_ways: bool = False):
    on_rows = (np.arange(200) + 7) % pitch < width
    on_cols = (np.arange(300) + 3) % pitch < width
    lines = on_rows[:, None] | (on_cols[None, :] & both_ways)
    return np.where(lines, shade, 1.0)


def same_digit(digit: np.ndarray, reference: np.ndarray = REFERENCE) -> bool:
    return (
        np.abs(digit - reference).mean() < 0.03
        and np.corrcoef(digit.ravel(), reference.ravel())[0, 1] > 0.95
    )


@pytest.mark.parametrize(
    "light",
    [vignette(0.8), vignette(0.6), side_light(0.4), side_light(0.6)],
    ids=["corners-a-fifth-darker", "corners-40%-darker", "lamp-40%", "lamp-60%"],
)
def test_shading_across_a_photo_is_not_read_as_ink(light):
    """The paper's level was the border's median: shading that left the middle of the page
    brighter than its edges, or one side darker, was cropped with the digit, which came out
    small, or read as light ink on dark. The level is now a smooth surface fitted to the paper."""
    assert same_digit(prepare_digit(paper_photo(light)))


@pytest.mark.parametrize(
    ("lines", "light"),
    [
        (ruled(), 1.0),
        (ruled(pitch=12, width=1, shade=0.75), 1.0),
        (ruled(both_ways=True), 1.0),
        (ruled(), side_light(0.4)),
    ],
    ids=["ruled", "narrow-ruled", "squared", "ruled-lamp-lit"],
)
def test_the_lines_of_ruled_and_squared_paper_are_erased(lines, light):
    assert same_digit(prepare_digit(paper_photo(light, lines)))


def test_a_bar_as_thick_as_the_strokes_across_the_whole_image_is_kept():
    """A 7 cropped tight: its bar spans the image like a ruled line, but it is as thick as the
    strokes, and a ruled line is thinner than them. It reads as the same 7 with a margin."""
    tight = Image.new("L", (100, 120), 255)
    ImageDraw.Draw(tight).line([(0, 8), (99, 8), (30, 119)], fill=0, width=14)
    margin = Image.new("L", (200, 220), 255)
    margin.paste(tight, (50, 50))
    assert same_digit(prepare_digit(np.asarray(tight)), prepare_digit(np.asarray(margin)))


@pytest.mark.parametrize("light", [vignette(0.6), side_light(0.6)], ids=["vignette", "lamp"])
def test_a_shaded_page_with_nothing_on_it_is_blank(light):
    with pytest.raises(ImageError, match="no digit found"):
        prepare_digit(light * 0.9, name="page")


def test_a_speck_far_from_the_digit_does_not_widen_the_crop():
    """One dark pixel in a corner of the page was ink to the crop, which then spanned the page
    and shrank the digit; pieces under 1% of the digit's largest piece are left out of it."""
    grey = np.asarray(draw_seven((300, 200), dark_on_light=True)).copy()
    grey[5:7, 290:292] = 0
    assert same_digit(prepare_digit(grey))


def test_a_page_whose_only_strong_marks_are_its_lines_has_no_digit():
    """Lines thinner than a faint smudge beside them are erased, and nothing strong is left."""
    page = 0.9 * ruled(pitch=20, width=1, shade=0.3)
    page[100:104, 150:154] = 0.8  # a smudge, far fainter than the lines
    with pytest.raises(ImageError, match="no digit found"):
        prepare_digit(page, name="lined page")


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_a_bold_digit_cropped_tight_reads_as_with_a_margin(dark_on_light):
    """A 28x28 0 with a stroke 7 pixels thick, 42% of the image ink: a paper level taken as a
    percentile over windows a quarter of the image wide took the inside of such strokes for
    paper and hollowed them (mean difference 0.21-0.25); the fitted surface cannot."""
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    tight = Image.new("L", (28, 28), paper)
    ImageDraw.Draw(tight).ellipse([4, 2, 23, 25], outline=ink, width=7)
    margin = Image.new("L", (108, 108), paper)
    margin.paste(tight, (40, 40))
    assert same_digit(prepare_digit(np.asarray(tight)), prepare_digit(np.asarray(margin)))
