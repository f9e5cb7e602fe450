"""Crash safety and exact resume, with real subprocesses and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepconvnet.fileio import array_to_json, load_npz

pytestmark = [pytest.mark.mnist, pytest.mark.slow]

SMALL = [
    "--train-limit", "3000", "--epochs", "3", "--batch-size", "100", "--threads", "2",
    "--val", "200", "--no-progress",
]  # fmt: skip


DIVERGING = ["--train-limit", "500", "--epochs", "2", "--optimizer", "sgd", "--lr", "1e30"]


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "deepconvnet", "train", *args]


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return done


def checkpoint_position(run_dir: Path) -> tuple[int, int] | None:
    """(epoch, batch) of the checkpoint on disk, or None while there is none."""
    path = run_dir / "checkpoint.npz"
    if not path.exists():
        return None
    state = array_to_json(load_npz(path)["__state__"])
    return state["epoch"], state["batch"]


def wait_for_position(process: subprocess.Popen, run_dir: Path, epoch: int, batch: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        position = checkpoint_position(run_dir)
        if position is not None and position >= (epoch, batch):
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.005)
    pytest.fail("training never reached the expected position")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    run_ok(train_cmd(*SMALL, "--out", str(run_dir)))
    return run_dir


def assert_same_final_state(a: Path, b: Path) -> None:
    for name in ("model.npz", "optimizer.npz"):
        left, right = load_npz(a / name), load_npz(b / name)
        assert left.keys() == right.keys()
        for key in left:
            if key == "__meta__":
                continue
            assert left[key].dtype == right[key].dtype, key
            assert np.array_equal(left[key], right[key]), f"{name}:{key} differs"
    metrics = [
        [[(k, v) for k, v in json.loads(line).items() if k != "seconds"] for line in lines]
        for lines in ((a / "metrics.jsonl").read_text().splitlines(),
                      (b / "metrics.jsonl").read_text().splitlines())
    ]  # fmt: skip
    assert metrics[0] == metrics[1]  # the same records, keys in the same order
    results = [json.loads((d / "results.json").read_text())["test_correct"] for d in (a, b)]
    assert results[0] == results[1]


def test_same_command_gives_bit_identical_results(straight_run, tmp_path):
    again = tmp_path / "again"
    run_ok(train_cmd(*SMALL, "--out", str(again)))
    assert_same_final_state(straight_run, again)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(straight_run, tmp_path):
    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        train_cmd(*SMALL, "--checkpoint-every", "1", "--out", str(run_dir)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_position(process, run_dir, epoch=1, batch=5)  # mid epoch 2
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    # a kill during a write may leave a temporary file, but only a hidden one beside an intact
    # checkpoint (atomic writes rename into place)
    assert all(p.name.startswith(".") for p in run_dir.glob("*.tmp"))
    assert checkpoint_position(run_dir)[0] == 1

    run_ok(train_cmd("--resume", str(run_dir), "--no-progress"))
    assert_same_final_state(straight_run, run_dir)


def test_sigterm_checkpoints_and_exits_130(straight_run, tmp_path):
    run_dir = tmp_path / "terminated"
    process = subprocess.Popen(
        train_cmd(*SMALL, "--out", str(run_dir)), stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_position(process, run_dir, epoch=1, batch=0)  # epoch 1 checkpointed
        time.sleep(0.3)  # somewhere inside epoch 2
        os.kill(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert f"deepconvnet train --resume {run_dir}" in err
    assert not any(p.name.endswith(".tmp") for p in run_dir.iterdir())

    run_ok(train_cmd("--resume", str(run_dir), "--no-progress"))
    assert_same_final_state(straight_run, run_dir)


def test_divergence_stops_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "diverged"
    done = subprocess.run(
        train_cmd(*DIVERGING, "--no-progress", "--out", str(run_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "loss became" in last and "--lr" in last
    assert "Traceback" not in done.stderr
    # it diverged before its first checkpoint: nothing is kept that would refuse the next attempt
    assert "no checkpoint had been written yet" in last
    assert not run_dir.exists()
