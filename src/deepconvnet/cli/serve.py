"""``predict``, ``serve`` and ``import-book``: using a trained network on your own digits."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepconvnet.cli.common import (
    add_model_argument,
    check_run_has_finished,
    dir_path,
    nonempty_path,
    positive_int,
)

ARCHITECTURES = ("deepconvnet",)


def register(sub: argparse._SubParsersAction) -> None:
    _register_predict(sub)
    _register_serve(sub)
    _register_import_book(sub)


def _register_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict",
        help="classify your own digit images (PNG, JPEG, BMP, GIF, TIFF)",
        description=(
            "Classify image files of handwritten digits. Each image (any size, colour or grey) is "
            "prepared as MNIST digits were: greyscale, inverted if dark on light, cropped to the "
            "digit, fitted into 20x20 keeping its aspect ratio, centred by centre of mass in "
            "28x28. Photos of paper work too: shading across the page and the lines of ruled or "
            "squared paper are taken out first."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files: PNG, JPEG, BMP, GIF or TIFF (of an animation or a multi-page file, "
        "the first frame)",
    )
    parser.add_argument(
        "--top", type=positive_int, default=3, metavar="K", help="labels to print (default: 3)"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print [{"file", "label", "probabilities": [10 floats]}, ...]',
    )
    parser.add_argument(
        "--save-preprocessed",
        type=dir_path,
        metavar="DIR",
        default=None,
        help="write the 28x28 images the network saw to DIR as PNG",
    )
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from deepconvnet.serve import DigitClassifier, predict_files

    check_run_has_finished(Path(args.model))
    classifier = DigitClassifier.from_path(args.model)
    predictions = predict_files(classifier, args.images, save_dir=args.save_preprocessed)
    if args.json:
        print(json.dumps([p.to_json() for p in predictions]))
        return 0
    width = max(len(p.file) for p in predictions)
    for prediction in predictions:
        ranked = "  ".join(f"{label} ({p:.3f})" for label, p in prediction.top(args.top))
        print(f"{prediction.file:<{width}}  {ranked}")
    if args.save_preprocessed:
        print(f"preprocessed 28x28 inputs saved in {args.save_preprocessed}", file=sys.stderr)
    return 0


def _register_serve(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="web page to draw digits + JSON API (POST /api/predict)",
        description=(
            "Serve a draw-a-digit web page (GET /) and a JSON API (POST /api/predict: a multipart "
            'image upload, or JSON {"pixels": 28x28 in [0, 1], white digit on black}). Binds to '
            "loopback unless --host says otherwise."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--host",
        type=_host,
        default="127.0.0.1",
        help="address to bind, a name or an IP (IPv6 with or without brackets); default: "
        "127.0.0.1, loopback only",
    )
    parser.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    parser.set_defaults(func=run_serve)


def _host(text: str) -> str:
    """The address as given, or unbracketed: ``[::1]`` is how URLs write ``::1``."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise argparse.ArgumentTypeError("expected an address or a host name, got nothing")
    return host


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    from deepconvnet.serve import DigitClassifier
    from deepconvnet.serve.app import LOOPBACK, listen_socket, serve, socket_url

    check_run_has_finished(Path(args.model))
    classifier = DigitClassifier.from_path(args.model)
    sock = listen_socket(args.host, args.port)  # a port in use is refused before any announcement
    if args.host not in (LOOPBACK, "localhost", "::1"):
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"serving {classifier.name} at {socket_url(sock)}/", file=sys.stderr)
    serve(classifier, sock)
    return 0


def _register_import_book(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "import-book",
        help="convert the book's deep_convnet_params.pkl into a model.npz",
        description=(
            "Convert the book's published weights (deep_convnet_params.pkl: W1..W8, b1..b8) into a "
            "deepconvnet checkpoint for evaluate, predict and serve. The pickle is read with a "
            "restricted unpickler that admits only NumPy arrays; anything else is refused."
        ),
    )
    parser.add_argument("pkl", metavar="PKL", help="the book's deep_convnet_params.pkl")
    parser.add_argument(
        "--out",
        type=nonempty_path,
        required=True,
        metavar="DIR|model.npz",
        help="a .npz file, or a directory (it receives model.npz)",
    )
    parser.add_argument(
        "--arch",
        choices=ARCHITECTURES,
        default="deepconvnet",
        help="the network the pickle holds (default: deepconvnet, figure 8-1)",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="parameter dtype (default: float64, the book's; both give 9797/10000 on MNIST)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace the model.npz if it already exists"
    )
    parser.set_defaults(func=run_import_book)


def run_import_book(args: argparse.Namespace) -> int:
    from deepconvnet.book import import_book

    path = import_book(args.pkl, args.out, arch=args.arch, dtype=args.dtype, overwrite=args.force)
    print(f"wrote {path} (the book's DeepConvNet, {args.dtype}, dropout mode 'book')")
    return 0
