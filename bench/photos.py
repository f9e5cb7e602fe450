"""How well ``predict`` reads digits photographed on paper: MNIST test digits as synthetic photos.

Each MNIST test digit is drawn as dark ink on light paper in a 240x240 "photo" (the digit scaled
6x, placed off-centre by up to 16 pixels, the lens's blur, sensor noise, 8-bit), under each
condition:

    clean     flat paper
    shaded    the corners a fifth darker than the middle (a phone's vignetting)
    side-lit  light falling off by 40% from one side to the other (a desk lamp)
    ruled     horizontal lines every 24 pixels, 2 thick, 60% as bright as the paper
    squared   such lines both ways (squared paper)
    ruled + side-lit

and, to check that digits drawn as MNIST's are read as before, "as MNIST": the 28x28 digit itself
(white on black, no photo) through the same preparation, and "as drawn": it black on white, as a
paint program saves a digit drawn edge to edge.

Every photo then goes through ``predict``'s preparation (``deepconvnet.images.prepare_digit``) and
the model; the table gives the accuracy per condition beside the model's accuracy on the same
digits as MNIST gives them (no preparation), which no preparation can beat.

    python bench/photos.py --model runs/book/model.npz            # 1,000 digits per condition
    python bench/photos.py --model RUN --count 200 --save-examples docs/photos.png

Results go to bench/results/photos.{json,md} (``--name`` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepconvnet.data import load_dataset
from deepconvnet.errors import ImageError
from deepconvnet.fileio import atomic_write_text
from deepconvnet.images import prepare_digit
from deepconvnet.plots import plt, save_figure
from deepconvnet.serve import DigitClassifier

RESULTS = Path(__file__).resolve().parent / "results"
SIDE = 240  # photo side, pixels
SCALE = 6  # MNIST pixel -> photo pixels
JITTER = 16  # the digit's offset from the centre, up to this many pixels each way
PAPER, INK = 0.9, 0.1  # reflectances
RULE_PITCH, RULE_WIDTH, RULE_SHADE = 24, 2, 0.6
BLUR = 1.0  # the lens's Gaussian blur, pixels
NOISE = 0.02
CONDITIONS = (
    "as MNIST",
    "as drawn",
    "clean",
    "shaded",
    "side-lit",
    "ruled",
    "squared",
    "ruled + side-lit",
)


def vignette(strength: float = 0.2) -> np.ndarray:
    """Illumination falling off with the squared distance from the centre: corners ``1 -
    strength`` of the middle."""
    rows, cols = np.indices((SIDE, SIDE)) - (SIDE - 1) / 2
    return 1 - strength * (rows**2 + cols**2) / (2 * ((SIDE - 1) / 2) ** 2)


def side_light(rng: np.random.Generator, falloff: float = 0.4) -> np.ndarray:
    """Illumination falling off linearly by ``falloff`` towards a random side."""
    ramp = np.linspace(1.0, 1.0 - falloff, SIDE)
    light = np.broadcast_to(ramp, (SIDE, SIDE))
    light = light if rng.random() < 0.5 else light.T
    return np.ascontiguousarray(light[::-1] if rng.random() < 0.5 else light)


def rules(rng: np.random.Generator, *, both_ways: bool) -> np.ndarray:
    """Reflectance of ruled (or squared) paper: lines at a random phase, 1 elsewhere."""
    on = (np.arange(SIDE) + rng.integers(RULE_PITCH)) % RULE_PITCH < RULE_WIDTH
    lines = on[:, None] | (on[None, :] if both_ways else False)
    return np.where(lines, RULE_SHADE, 1.0)


def photograph(digit: np.ndarray, condition: str, rng: np.random.Generator) -> np.ndarray:
    """An 8-bit grey photo of an MNIST digit (uint8 28x28, white on black) drawn on paper."""
    from scipy import ndimage

    if condition == "as MNIST":
        return digit
    if condition == "as drawn":
        return 255 - digit
    size = 28 * SCALE
    ink = Image.fromarray(digit.astype(np.float32) / 255).resize((size, size), Image.BICUBIC)
    coverage = np.zeros((SIDE, SIDE))
    top, left = (SIDE - size) // 2 + rng.integers(-JITTER, JITTER + 1, size=2)
    coverage[top : top + size, left : left + size] = np.clip(np.asarray(ink), 0, 1)
    paper = np.full((SIDE, SIDE), PAPER)
    light = np.ones((SIDE, SIDE))
    if condition in ("ruled", "ruled + side-lit", "squared"):
        paper = paper * rules(rng, both_ways=condition == "squared")
    if condition == "shaded":
        light = vignette()
    if condition in ("side-lit", "ruled + side-lit"):
        light = side_light(rng)
    reflectance = paper * (1 - coverage) + INK * coverage
    photo = ndimage.gaussian_filter(light * reflectance, BLUR) + rng.normal(0, NOISE, light.shape)
    return np.clip(np.rint(photo * 255), 0, 255).astype(np.uint8)


def prepared(photo: np.ndarray) -> np.ndarray | None:
    """What the network sees of a photo, or None where preparation found no digit."""
    try:
        return prepare_digit(photo)
    except ImageError:
        return None


def measure(classifier, images, labels, condition, seed) -> dict:
    """Accuracy under one condition, and the preparation's time per photo (not the photo's)."""
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    photos = [photograph(image, condition, rng) for image in images]
    started = time.perf_counter()
    digits = [prepared(photo) for photo in photos]
    seconds = time.perf_counter() - started
    found = [i for i, d in enumerate(digits) if d is not None]
    predicted = np.full(len(images), -1)
    if found:
        proba = classifier.probabilities(np.stack([digits[i] for i in found]))
        predicted[found] = proba.argmax(axis=1)
    return {
        "condition": condition,
        "accuracy": float((predicted == labels).mean()),
        "blank": len(images) - len(found),
        "ms_per_image": 1000 * seconds / len(images),
    }


def save_examples(path: Path, images: np.ndarray, seed: int) -> None:
    """One digit under every condition: the photo above what the network saw."""
    fig, axes = plt.subplots(2, len(CONDITIONS), figsize=(2 * len(CONDITIONS), 4.2))
    for column, condition in enumerate(CONDITIONS):
        rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
        photo = photograph(images[0], condition, rng)
        digit = prepared(photo)
        axes[0, column].imshow(photo, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[0, column].set_title(condition, fontsize=9)
        axes[1, column].imshow(np.zeros((28, 28)) if digit is None else digit, cmap="gray")
        for ax in axes[:, column]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("network's input")
    fig.tight_layout()
    save_figure(fig, path)


def table(rows: list[dict], direct: float, count: int) -> str:
    lines = [
        f"| condition ({count:,} MNIST test digits each) | accuracy | no digit found | ms/image |",
        "| --- | ---: | ---: | ---: |",
        f"| MNIST's own 28x28 digits, no preparation | {direct:.2%} | | |",
    ]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['accuracy']:.2%} | {r['blank']} | {r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="RUN_DIR or model.npz")
    parser.add_argument("--count", type=int, default=1000, help="test digits per condition")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="photos", help="results file stem")
    parser.add_argument("--save-examples", type=Path, default=None, metavar="PNG")
    args = parser.parse_args(argv)

    classifier = DigitClassifier.from_path(args.model)
    ds = load_dataset("mnist")
    images, labels = ds.test_images[: args.count], ds.test_labels[: args.count].astype(int)
    direct_proba = classifier.probabilities(images.astype(np.float32) / 255)
    direct = float((direct_proba.argmax(axis=1) == labels).mean())
    rows = []
    for condition in CONDITIONS:
        rows.append(measure(classifier, images, labels, condition, args.seed))
        print(f"{condition:>15}: {rows[-1]['accuracy']:.2%}", file=sys.stderr, flush=True)
    report = table(rows, direct, len(images))
    print(report)
    record = {"model": str(args.model), "count": len(images), "direct": direct, "rows": rows}
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(record, indent=2) + "\n")
    command = "python bench/photos.py " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic_write_text(RESULTS / f"{args.name}.md", f"`{command}`\n\n{report}\n")
    if args.save_examples:
        save_examples(args.save_examples, images, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
