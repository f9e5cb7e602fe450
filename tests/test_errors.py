"""Every bad input of issue 9, through the real command line.

Each case asserts what the user sees: exit code 2, one line on stderr naming the file or value and
the problem, no traceback (unless --debug), and nothing half-written left behind.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepconvnet import fileio
from deepconvnet.checkpoint import save_model
from deepconvnet.cli import main
from deepconvnet.data.idx import write_idx
from deepconvnet.errors import DeepConvNetError
from deepconvnet.fileio import atomic_save_npz, json_to_array
from deepconvnet.models import build_model
from deepconvnet.streams import VERSION as STREAMS_VERSION
from deepconvnet.train import TrainConfig, TrainState


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.npz"
    save_model(path, build_model("deepconvnet", rng=np.random.default_rng(0)))
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and one error line (informational lines, such as which data source served, may
    come before it), naming every needle."""
    assert code == 2, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and err.splitlines()[-1] == error_lines[0], err
    for needle in needles:
        assert needle in error_lines[0], (needle, err)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    assert_one_line_error(*run_cli(["evaluate", bad], capsys), str(bad))


def test_truncated_checkpoint(tmp_path, model_file, capsys):
    cut = tmp_path / "model.npz"
    cut.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    assert_one_line_error(*run_cli(["predict", cut, cut], capsys), str(cut))


def test_checkpoint_with_a_wrong_array_shape(tmp_path, model_file, capsys):
    arrays = fileio.load_npz(model_file)
    arrays["0.W"] = np.zeros((8, 1, 3, 3), np.float32)
    bad = tmp_path / "model.npz"
    atomic_save_npz(bad, arrays)
    assert_one_line_error(*run_cli(["evaluate", bad], capsys), "0.W", "(8, 1, 3, 3)")


def test_resume_from_a_checkpoint_of_another_architecture(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = TrainConfig(train_limit=200, epochs=1)
    record = {"config": asdict(config), "streams": STREAMS_VERSION}
    (run_dir / "config.json").write_text(json.dumps(record))
    other = build_model("deepconvnet-bn", rng=np.random.default_rng(0))
    arrays = {f"model/{k}": v for k, v in other.params().items()}
    arrays["__spec__"] = json_to_array(other.spec())
    arrays["__state__"] = json_to_array(asdict(TrainState()))
    atomic_save_npz(run_dir / "checkpoint.npz", arrays)
    assert_one_line_error(*run_cli(["train", "--resume", run_dir], capsys), "another architecture")


def test_malformed_idx_file(tmp_path, capsys):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03 not really idx")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    code, err = run_cli(["data", "--data-dir", tmp_path], capsys)
    assert_one_line_error(code, err, str(tmp_path))


def test_checksum_mismatch_names_the_source(tmp_path, capsys):
    """Well-formed IDX files of the right shapes whose bytes are not MNIST's."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((60000, 28, 28), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(60000, np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz") as f:
        assert f.read(4) == b"\x00\x00\x08\x01"  # the files really are valid IDX
    code, err = run_cli(["data", "--data-dir", tmp_path], capsys)
    assert_one_line_error(code, err, str(tmp_path))
    assert "sha256" in err.lower() or "checksum" in err.lower()


def test_unreadable_and_non_image_files(tmp_path, model_file, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_one_line_error(*run_cli(["predict", model_file, text], capsys), str(text))
    missing = tmp_path / "missing.png"
    assert_one_line_error(*run_cli(["predict", model_file, missing], capsys), str(missing))


def test_image_too_large(tmp_path, model_file, capsys):
    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 5000), 255).save(huge)  # 45 megapixels, a few kB on disk
    code, err = run_cli(["predict", model_file, huge], capsys)
    assert_one_line_error(code, err, str(huge))
    assert "pixel" in err.lower()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--batch-size", "-5"],
        ["train", "--val", "-1"],
        ["train", "--threads", "0"],
        ["train", "--dropout", "1.5"],
        ["predict", "model.npz", "x.png", "--top", "0"],
        ["serve", "model.npz", "--port", "70000"],
        ["misclassified", "model.npz", "--max", "101"],  # 55 s and 1.1 GB at 1000
        ["gradcheck", "--samples", "51"],  # ran past a minute at 200
    ],
)
def test_out_of_range_cli_values(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1
    value = argv[argv.index(next(a for a in argv if a.startswith("--"))) + 1]
    assert value in err


def test_a_newline_in_a_path_keeps_the_error_on_one_line(tmp_path, capsys):
    code, err = run_cli(["evaluate", tmp_path / "no\nsuch"], capsys)
    assert_one_line_error(code, err, "no\\nsuch: no such checkpoint file")


def test_a_run_that_has_not_finished_training_says_so(tmp_path, model_file, capsys):
    """A run stopped before its first epoch ended was "model.npz: no such checkpoint file";
    one stopped later was evaluated without a word that its figures are not the run's."""
    from deepconvnet.cli.common import check_run_has_finished

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"")  # what run_state looks at
    code, err = run_cli(["evaluate", run], capsys)
    assert_one_line_error(code, err, "stopped before its first epoch", f"--resume {run}")
    (run / "model.npz").write_bytes(Path(model_file).read_bytes())
    check_run_has_finished(run)
    assert "has not finished training" in capsys.readouterr().err
    (run / "results.json").write_text("{}")
    check_run_has_finished(run)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "--top", "1"]])
def test_an_empty_model_path_is_refused_as_such(command, capsys):
    """An unset shell variable ("$RUN") was read as the current directory: "model.npz: no such
    checkpoint file"."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "", *(["x.png"] if command[0] == "predict" else [])])
    assert exit_info.value.code == 2
    assert "expected a path, got an empty string" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_a_fifo_given_as_input_is_refused_unopened(tmp_path, model_file, capsys):
    """Opening a FIFO to read waits for a writer: predict and import-book hung for ever."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, err = run_cli(["predict", model_file, fifo], capsys)
    assert_one_line_error(code, err, f"{fifo}: a FIFO or socket, not an image file")
    code, err = run_cli(["import-book", fifo, "--out", tmp_path / "book"], capsys)
    assert_one_line_error(code, err, f"{fifo}: a FIFO or socket, not a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_unwritable_output_directory(tmp_path, model_file, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(image)
    Image.open(image).close()
    target = blocker / "pre"
    code, err = run_cli(["visualize", model_file, "--out", target], capsys)
    assert_one_line_error(code, err, str(blocker))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("command", "out", "message"),
    [
        (
            ["misclassified", "MODEL"],
            "dir",
            "argument --out: {dir} is a directory (expected FILE.png)",
        ),
        (
            ["misclassified", "MODEL"],
            "fig.jpg",
            "expected a file name ending in .png, got '{dir}/fig.jpg'",
        ),
        (["augment-preview"], "dir", "argument --out: {dir} is a directory (expected FILE.png)"),
        (["augment-preview"], "notes.txt", "ending in .png, got '{dir}/notes.txt'"),
        (["visualize", "MODEL"], "file", "argument --out: {file} is a file, not a directory"),
        (["experiment", "depth", "--quick"], "file", "argument --out: {file} is a file, not a dir"),
    ],
)
def test_an_output_of_the_wrong_kind_is_refused_before_any_work(
    command, out, message, tmp_path, model_file, monkeypatch, capsys
):
    """misclassified --out DIR tested the whole test set (9 s) before it said "Is a directory";
    --out fig.jpg wrote PNG bytes under that name."""
    import deepconvnet.data

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr(deepconvnet.data, "load_dataset", no_data)
    places = {"dir": tmp_path, "file": tmp_path / "a-file"}
    places["file"].write_text("kept")
    target = places.get(out, tmp_path / out)
    argv = [model_file if a == "MODEL" else a for a in command]
    with pytest.raises(SystemExit) as exit_info:  # a usage error, as argparse exits
        raise SystemExit(main([str(a) for a in [*argv, "--out", target]]))
    code, err = exit_info.value.code, capsys.readouterr().err.strip()
    expected = message.format(dir=tmp_path, file=places["file"])
    assert_one_line_error(code, err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert places["file"].read_text() == "kept"


@pytest.mark.mnist
def test_files_of_the_wrong_kind_are_named_for_what_they_are(tmp_path, model_file, capsys):
    """Each used to get a message about the wrong thing: a training checkpoint as a model was
    "missing array '0.W'", a PNG as the book's pickle "a pickle with persistent references", a
    file given to --resume "afile/config.json: unreadable ([Errno 20] Not a directory)", and
    predict on a run stopped before its first epoch "no such checkpoint file"."""
    image = tmp_path / "seven.png"
    Image.new("L", (28, 28), 0).save(image)
    unstarted = tmp_path / "unstarted"
    unstarted.mkdir()
    (unstarted / "config.json").write_text(json.dumps({"config": asdict(TrainConfig())}))
    atomic_save_npz(
        unstarted / "checkpoint.npz", {"__state__": json_to_array(asdict(TrainState()))}
    )
    cases = [
        (["evaluate", unstarted / "checkpoint.npz"], "a training checkpoint (what --resume reads)"),
        (
            ["import-book", image, "--out", tmp_path / "book"],
            f"{image}: not a pickle (the book's parameters",
        ),
        (["train", "--resume", image], f"{image}: not a run directory (a file)"),
        (["predict", unstarted, image], f"{unstarted}: training stopped before its first epoch"),
        (["serve", unstarted], f"{unstarted}: training stopped before its first epoch"),
    ]
    for argv, words in cases:
        code, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seven.png", "unstarted"]


@pytest.mark.mnist
def test_train_into_a_dangling_symlink_names_it(tmp_path, capsys):
    """It said the directory "was taken by another run as this one started"."""
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "missing")
    argv = ["train", "--train-limit", "100", "--epochs", "1", "--no-progress", "--out", link]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, f"{link} is a symlink to no directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.mnist
def test_visualize_writes_neither_figure_when_one_cannot_be_written(tmp_path, model_file, capsys):
    out = tmp_path / "vis"
    (out / "feature_maps.png").mkdir(parents=True)  # the second figure's place is taken
    code, err = run_cli(["visualize", model_file, "--out", out], capsys)
    assert_one_line_error(code, err, f"cannot write {out / 'feature_maps.png'}: Is a directory")
    assert sorted(p.name for p in out.rglob("*")) == ["feature_maps.png"]  # no filters.png, no .tmp


def test_full_disk_during_a_save_leaves_the_old_file_and_no_partial_one(
    tmp_path, model_file, monkeypatch, capsys
):
    out = tmp_path / "model.npz"
    out.write_bytes(b"previous contents")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", no_space)
    argv = ["import-book", _book_pickle(tmp_path, model_file), "--out", out, "--force"]
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, str(out), "No space left on device")
    assert out.read_bytes() == b"previous contents"
    assert leftovers(tmp_path) == []


def test_a_block_inside_an_all_or_nothing_block_shares_its_outcome(tmp_path):
    """The inner block used to commit its files on leaving, whatever became of the outer one."""
    with pytest.raises(RuntimeError), fileio.all_or_nothing():
        with fileio.all_or_nothing():
            fileio.atomic_write_text(tmp_path / "a.txt", "inner")
        fileio.atomic_write_text(tmp_path / "b.txt", "outer")
        raise RuntimeError("the outer block fails")
    assert list(tmp_path.iterdir()) == []
    with fileio.all_or_nothing():
        with fileio.all_or_nothing():
            fileio.atomic_write_text(tmp_path / "a.txt", "inner")
        fileio.atomic_write_text(tmp_path / "b.txt", "outer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_write_never_replaces_what_is_not_a_regular_file(tmp_path):
    """The rename of an atomic write replaces its target: `--out /dev/null` turned the device
    into a PNG. A FIFO (a device needs root to make) is refused, unopened; a symlink is written
    through and kept; a symlink loop is one line."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(DeepConvNetError, match="fifo: not a regular file"):
        fileio.atomic_write_text(fifo, "data")
    assert fifo.is_fifo()
    with pytest.raises(DeepConvNetError, match="Is a directory"):
        fileio.atomic_write_text(tmp_path, "data")
    target = tmp_path / "target.txt"
    target.write_text("old")
    (tmp_path / "link.txt").symlink_to(target.name)
    fileio.atomic_write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "new"
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(DeepConvNetError, match=r"cannot write .*a: Too many levels"):
        fileio.atomic_write_text(tmp_path / "a", "data")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["a", "b", "fifo", "link.txt", "target.txt"]  # no staged file left


def test_a_failed_all_or_nothing_block_removes_the_directories_it_made(tmp_path):
    """visualize --out new/dir failing on its second figure left new/dir behind, empty."""
    out = tmp_path / "new" / "dir"
    with pytest.raises(RuntimeError), fileio.all_or_nothing():
        fileio.atomic_write_text(out / "a.txt", "first")
        fileio.atomic_write_text(out / "sub" / "b.txt", "second")
        raise RuntimeError("the block fails")
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    (kept / "other").mkdir(parents=True)
    with pytest.raises(RuntimeError), fileio.all_or_nothing():
        fileio.atomic_write_text(kept / "new" / "a.txt", "first")
        raise RuntimeError("the block fails")
    assert sorted(p.name for p in kept.iterdir()) == ["other"]  # only what the block made


def test_a_file_where_a_directory_should_be_is_named(tmp_path):
    """The OS says "File exists" (or "Not a directory"), naming neither the file nor the path."""
    blocker = tmp_path / "afile"
    blocker.write_text("kept")
    with pytest.raises(DeepConvNetError) as excinfo:
        fileio.atomic_write_text(blocker / "sub" / "x.png", "never")
    assert str(excinfo.value) == f"cannot write {blocker}/sub/x.png: {blocker} is not a directory"
    assert blocker.read_text() == "kept"


def test_ctrl_c_in_any_command_exits_130_with_its_message(tmp_path, monkeypatch, capsys):
    """An interrupted training inside another command (here `experiment depth`) is a clean stop,
    not an internal error."""
    from deepconvnet import experiments
    from deepconvnet.train import TrainingInterrupted

    cell = tmp_path / "depth" / "runs" / "depth-large-n500"

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(cell)

    monkeypatch.setattr(experiments, "run_depth_experiment", interrupted)
    code = main(["experiment", "depth", "--quick", "--out", str(tmp_path / "depth")])
    err = capsys.readouterr().err.strip()
    assert code == 130
    assert err == f"deepconvnet: interrupted; resume with: deepconvnet train --resume {cell}"


def test_ctrl_c_while_the_commands_are_loaded_is_interrupted_not_a_traceback(monkeypatch, capsys):
    import deepconvnet.cli

    def importing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(deepconvnet.cli, "build_parser", importing)
    assert main(["summary"]) == 130
    assert capsys.readouterr().err == "deepconvnet: interrupted\n"


def test_an_os_error_on_a_path_is_one_line_naming_it(tmp_path, capsys):
    """A name longer than the file system allows raised OSError from pathlib's own checks, deep
    in a command (an internal error); the path and the OS's words are the user's answer."""
    long_name = tmp_path / ("a" * 300)
    code, err = run_cli(["train", "--epochs", "1", "--out", long_name], capsys)
    assert_one_line_error(code, err, "a" * 300, "File name too long")
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"garbage")
    assert main(["--debug", "evaluate", str(bad)]) == 2
    assert "Traceback" in capsys.readouterr().err


def _book_pickle(tmp_path: Path, model_file: Path) -> Path:
    """A file in the book's format (W1..W8, b1..b8 float64) built from a saved model."""
    arrays = fileio.load_npz(model_file)
    weights = [k for k in arrays if k.endswith(".W")]
    params = {}
    for i, key in enumerate(sorted(weights, key=lambda k: int(k.split(".")[0])), start=1):
        params[f"W{i}"] = arrays[key].astype(np.float64)
        params[f"b{i}"] = arrays[key.replace(".W", ".b")].astype(np.float64)
    path = tmp_path / "book.pkl"
    path.write_bytes(pickle.dumps(params))  # pickle only to write a fixture in the book's format
    return path
