"""Ensembles: averaging and voting by hand, the thread plan, evaluate --json on saved models,
members trained in parallel worker processes (seeds, interruption, resume, failure), Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import tiny  # noqa: F401  (pytest fixture)

from deepconvnet.checkpoint import load_model, save_model
from deepconvnet.cli import main
from deepconvnet.ensemble import (
    MANIFEST,
    average_probabilities,
    check_members_can_start,
    majority_vote,
    member_model_paths,
    new_ensemble,
    plan_ensemble,
    read_run_files,
    score_ensemble,
    write_run_files,
)
from deepconvnet.errors import DeepConvNetError
from deepconvnet.models import build_model
from deepconvnet.train import TrainConfig, run_state

# Three members, four samples, three classes.
P1 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
P2 = np.array([[0.4, 0.5, 0.1], [0.3, 0.3, 0.4], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
P3 = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.4, 0.3, 0.3], [0.3, 0.3, 0.4]])
LABELS = np.array([0, 2, 1, 1])


def test_averaged_probabilities_and_accuracy_by_hand():
    average = average_probabilities([P1, P2, P3])
    # column sums / 3: (1.7, 1.0, 0.3), (0.6, 1.0, 1.4), (0.7, 1.1, 1.2), (0.9, 1.5, 0.6)
    assert np.allclose(average[0], [1.7 / 3, 1.0 / 3, 0.3 / 3])
    assert np.allclose(average[2], [0.7 / 3, 1.1 / 3, 1.2 / 3])
    assert average.argmax(axis=1).tolist() == [0, 2, 2, 1]
    report = score_ensemble([P1, P2, P3], LABELS)
    # member argmaxes 0,1,2,0 / 1,2,1,1 / 0,2,0,2 against labels 0,2,1,1
    assert report["members"] == [0.25, 0.75, 0.5]
    assert report["ensemble"] == 0.75


def test_majority_vote_with_ties_broken_by_the_averaged_probability():
    # votes: {0,1,0} -> 0; {1,2,2} -> 2; {2,1,0} a three-way tie -> the highest average, class 2
    # (1.2 of 0.7, 1.1, 1.2); {0,1,2} a three-way tie -> class 1 (1.5 of 0.9, 1.5, 0.6)
    assert majority_vote([P1, P2, P3]).tolist() == [0, 2, 2, 1]
    assert score_ensemble([P1, P2, P3], LABELS)["vote"] == 0.75

    # two members disagree on every sample: the more confident one decides
    a = np.array([[0.9, 0.1], [0.45, 0.55]])
    b = np.array([[0.2, 0.8], [0.95, 0.05]])
    assert majority_vote([a, b]).tolist() == [0, 0]
    # exact tie in votes and in averaged probability: the lower class index
    assert majority_vote([np.array([[0.6, 0.4]]), np.array([[0.4, 0.6]])]).tolist() == [0]


def test_a_clear_majority_beats_confidence():
    confident = np.array([[0.01, 0.99]])
    lukewarm = np.array([[0.51, 0.49]])
    assert majority_vote([confident, lukewarm, lukewarm]).tolist() == [0]
    assert average_probabilities([confident, lukewarm, lukewarm]).argmax() == 1


def test_members_must_agree_in_shape():
    with pytest.raises(DeepConvNetError, match="differ in shape"):
        score_ensemble([P1, P1[:3]], LABELS)
    with pytest.raises(DeepConvNetError, match="at least one member"):
        average_probabilities([])
    with pytest.raises(DeepConvNetError, match="4 predictions for 3 labels"):
        score_ensemble([P1], LABELS[:3])


def test_thread_budget_is_shared_among_workers(tmp_path):
    config = TrainConfig(seed=7, threads=None)
    plan = plan_ensemble(config, tmp_path, members=10, workers=None, threads=16)
    assert (plan.workers, plan.member_threads) == (10, 1)
    plan = plan_ensemble(config, tmp_path, members=3, workers=None, threads=16)
    assert (plan.workers, plan.member_threads) == (3, 5)
    plan = plan_ensemble(config, tmp_path, members=10, workers=4, threads=16)
    assert (plan.workers, plan.member_threads) == (4, 4)
    assert [plan.member_config(i).seed for i in range(3)] == [7, 8, 9]
    assert plan.member_config(2).threads == 4 and config.threads is None
    with pytest.raises(DeepConvNetError, match="--workers 5 exceeds the thread budget"):
        plan_ensemble(config, tmp_path, members=10, workers=5, threads=4)


def test_surplus_workers_do_not_take_threads(tmp_path):
    """Workers beyond the member count would idle: they are dropped before threads are shared."""
    config = TrainConfig(seed=0)
    plan = plan_ensemble(config, tmp_path, members=2, workers=4, threads=4)
    assert (plan.workers, plan.member_threads) == (2, 2)
    plan = plan_ensemble(config, tmp_path, members=2, workers=4, threads=2)
    assert (plan.workers, plan.member_threads) == (2, 1)


def test_run_files_round_trip_and_stay_inside(tmp_path):
    files = {"results.json": b'{"a": 1}', "plots/curve.png": b"\x89PNG"}
    target = tmp_path / "member-00"
    target.mkdir()
    (target / "stale.txt").write_text("from an older attempt")
    write_run_files(target, files)
    assert read_run_files(target) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member-00"]  # no staging left
    with pytest.raises(DeepConvNetError, match="outside"):
        write_run_files(tmp_path / "member-01", {"../escape": b"x"})
    assert not (tmp_path / "escape").exists()


def _one_error_line(err: str) -> str:
    """The error line, asserting it is the only line of stderr."""
    assert err.count("\n") == 1 and err.startswith("deepconvnet: error: "), err
    return err


def test_bad_data_is_refused_before_the_ensemble_directory_exists(tmp_path, capsys):
    out, missing = tmp_path / "ens", tmp_path / "nonexistent"
    argv = ["ensemble", "train", "--out", str(out), "--members", "2", "--data-dir", str(missing)]
    assert main(argv) == 2
    assert f"{missing}: no such directory" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()

    # --resume checks again (the data may have moved) and touches nothing
    new_ensemble(plan_ensemble(TrainConfig(data_dir=str(missing)), out, members=2, threads=2))
    assert main(["ensemble", "train", "--resume", str(out)]) == 2
    assert f"{missing}: no such directory" in _one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "logs"]
    assert not any((out / "logs").iterdir())


@pytest.mark.parametrize("address", ["garbage::", "127.0.0.1:1"])
def test_a_wrong_ray_address_is_one_line_and_makes_nothing(tmp_path, capsys, address):
    """It was an internal error after the ensemble's directory had been made (and an address
    that does not answer took Ray a minute of retries)."""
    out = tmp_path / "ens"
    argv = ["ensemble", "train", "--out", str(out), "--members", "1", "--ray-address", address]
    assert main(argv) == 2
    assert f"cannot connect to Ray at {address}" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_port_that_is_no_ray_head_is_refused_at_once(tmp_path, capsys):
    """An HTTP server (any listener that does not speak gRPC) used to leave Ray retrying for
    minutes, a log line every few seconds."""
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        out = tmp_path / "ens"
        argv = ["ensemble", "train", "--out", str(out), "--members", "1", "--ray-address", address]
        started = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - started < 10
    finally:
        server.shutdown()
    assert _one_error_line(capsys.readouterr().err) == (
        f"deepconvnet: error: cannot connect to Ray at {address}: it answers, but not as a Ray "
        "head (gRPC)\n"
    )
    assert not out.exists()


class _FakeRay:
    """``ray.init`` writing to fd 2 as Ray's C++ core does, then failing with ``error``."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    def init(self, **_: object) -> None:
        os.write(2, b"[core] Failed to get cluster ID from GCS server\n")
        if self.error is not None:
            raise self.error


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        (None, ConnectionError("Failed to connect\nmore"), "Failed to connect"),
        (
            None,
            _chained(ConnectionError("x"), RuntimeError("RPC error: InvalidAuthToken: missing")),
            "the cluster asks for token authentication: set RAY_AUTH_MODE=token",
        ),
        (
            "token",
            _chained(ConnectionError("x"), RuntimeError("RPC error: InvalidAuthToken: wrong")),
            "the cluster refused this machine's token",
        ),
    ],
)
def test_a_failed_ray_connection_is_one_line_without_rays_log(
    capfd, monkeypatch, mode, error, words
):
    from deepconvnet.ensemble import _connect_to_ray_head

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    if mode:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    with pytest.raises(DeepConvNetError) as raised:
        _connect_to_ray_head(_FakeRay(error), "10.0.0.1:6379")
    assert str(raised.value).startswith(f"cannot connect to Ray at 10.0.0.1:6379: {words}")
    assert "\n" not in str(raised.value)
    assert capfd.readouterr().err == "connecting to Ray at 10.0.0.1:6379 ...\n"  # no core log


def test_a_made_ray_connection_shows_what_ray_logged(capfd):
    from deepconvnet.ensemble import _connect_to_ray_head

    _connect_to_ray_head(_FakeRay(None), "10.0.0.1:6379")
    assert capfd.readouterr().err == (
        "connecting to Ray at 10.0.0.1:6379 ...\n[core] Failed to get cluster ID from GCS server\n"
    )


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"workers": None}, "no workers"),
        ({"config": [1]}, "config is [1] (expected an object)"),
        ({"workers": 0}, "workers is 0 (expected a finite number >= 1)"),
        ({"members": 0}, "members is 0 (expected a finite number >= 1)"),
        ({"members": -3}, "members is -3 (expected a finite number >= 1)"),
        ({"member_threads": "2"}, "member_threads is '2'"),
        ({"config": {"epochs": "abc"}}, "epochs is 'abc'"),
        ({"members": 10**12}, "members is 1000000000000 (expected at most 1000)"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_the_value(tmp_path, capsys, edit, words):
    """A hand-edited ensemble.json is refused on --resume before anything starts (the data
    directory does not exist, so the old code, reaching the data check, named that instead)."""
    out = tmp_path / "ens"
    config = TrainConfig(data_dir=str(tmp_path / "nonexistent"))
    new_ensemble(plan_ensemble(config, out, members=2, threads=2))
    manifest = json.loads((out / MANIFEST).read_text())
    for key, value in edit.items():
        if value is None:
            del manifest[key]
        elif isinstance(value, dict):
            manifest[key].update(value)
        else:
            manifest[key] = value
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert main(["ensemble", "train", "--resume", str(out)]) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        f"deepconvnet: error: {out / MANIFEST}: {words}\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "logs"]
    assert not any((out / "logs").iterdir())


def _finished_member(run_dir: Path, seed: int) -> Path:
    """A member as a finished run leaves it: its model and its results."""
    save_model(run_dir / "model.npz", build_model("deepconvnet", rng=np.random.default_rng(seed)))
    (run_dir / "results.json").write_text(json.dumps({"test_accuracy": 0.5}))
    return run_dir / "model.npz"


def test_evaluate_refuses_an_ensemble_with_members_missing(tmp_path):
    """ensemble.json counts the members: two of three on disk are not the ensemble trained."""
    out = tmp_path / "ens"
    new_ensemble(plan_ensemble(TrainConfig(), out, members=3, threads=3))
    models = [_finished_member(out / f"member-{i:02d}", i) for i in range(2)]
    with pytest.raises(DeepConvNetError) as info:
        member_model_paths([out])
    assert str(info.value) == (
        f"{out}: {MANIFEST} counts 3 members but member-02 is missing; "
        f"train them with deepconvnet ensemble train --resume {out}"
    )
    models.append(_finished_member(out / "member-02", 2))
    assert member_model_paths([out]) == models

    (out / MANIFEST).unlink()  # members assembled by hand: no count, the folders present
    (out / "member-01" / "results.json").unlink()
    with pytest.raises(DeepConvNetError, match="member-01 is unfinished"):
        member_model_paths([out])
    (out / "member-01" / "results.json").write_text("{}")
    assert member_model_paths([out]) == models

    run = out / "member-00"  # a run named on its own, checkpointed but unfinished
    (run / "results.json").unlink()
    (run / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(DeepConvNetError, match=r"member-00 is unfinished .*train --resume"):
        member_model_paths([run, out / "member-01"])


def test_evaluate_of_a_corrupt_manifest_is_one_line_at_once(tmp_path, capsys):
    """A count of 10**12 members used to enumerate them all (a hang); JSON nested deeper than
    the parser's stack was an internal RecursionError."""
    out = tmp_path / "ens"
    new_ensemble(plan_ensemble(TrainConfig(), out, members=2, threads=2))
    manifest = json.loads((out / MANIFEST).read_text())
    for text, words in (
        (json.dumps({**manifest, "members": 10**12}), "members is 1000000000000"),
        ("[" * 100_000, "unreadable"),
    ):
        (out / MANIFEST).write_text(text)
        assert main(["ensemble", "evaluate", str(out)]) == 2
        assert words in _one_error_line(capsys.readouterr().err)


def test_a_split_no_member_could_train_is_refused_up_front(tiny, tmp_path):  # noqa: F811
    def plan(**options):
        config = TrainConfig(dataset="tiny", data_dir=str(tiny.idx_dir), **options)
        return plan_ensemble(config, tmp_path / "ens", members=2, threads=2)

    with pytest.raises(DeepConvNetError, match=r"--val 12 leaves no training images \(of 12\)"):
        check_members_can_start(plan(val=12))
    with pytest.raises(DeepConvNetError, match="--train-limit 13 exceeds the 12 training images"):
        check_members_can_start(plan(train_limit=13))
    with pytest.raises(DeepConvNetError, match=r"--val 6 leaves no training images \(of 6\)"):
        check_members_can_start(plan(train_limit=6, val=6))
    check_members_can_start(plan(train_limit=6, val=5))
    assert not (tmp_path / "ens").exists()


def test_a_failing_member_is_reported_and_the_command_fails(tiny, tmp_path, capsys):  # noqa: F811
    # A stray file in member-00 makes the member refuse to start, after the driver started it.
    config = TrainConfig(dataset="tiny", data_dir=str(tiny.idx_dir), epochs=1, batch_size=4)
    out = tmp_path / "ens"
    new_ensemble(plan_ensemble(config, out, members=1, threads=1))
    (out / "member-00").mkdir()
    (out / "member-00" / "notes.txt").write_text("not a run file")
    assert main(["ensemble", "train", "--resume", str(out)]) == 1
    printed = capsys.readouterr()
    assert "member-00 FAILED: exit code 2: deepconvnet: error: " in printed.err
    assert "unexpected files ['notes.txt']" in printed.err
    assert "member-00  FAILED" in printed.out
    assert "0/1 members finished" in printed.out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["ensemble", "train", "--members", "2"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("kept")
    assert main(["ensemble", "train", "--members", "2", "--out", str(afile)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"deepconvnet: error: {afile} is not a directory"
    assert afile.read_text() == "kept"
    assert main(["ensemble", "train", "--resume", str(tmp_path)]) == 2
    assert "not an ensemble directory" in capsys.readouterr().err
    assert main(["ensemble", "evaluate", str(tmp_path / "nothing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# On the real MNIST


@pytest.mark.mnist
def test_evaluate_json_on_two_saved_models(tmp_path, capsys):
    from deepconvnet.data import load_dataset, to_float

    real_mnist = load_dataset("mnist", log=lambda message: None)

    paths = []
    for seed in (1, 2):
        model = build_model("deepconvnet", rng=np.random.default_rng(seed))
        paths.append(save_model(tmp_path / f"m{seed}.npz", model))
    n = 1000  # --limit: the first 1,000 test images keep the test quick
    images, labels = to_float(real_mnist.test_images[:n]), real_mnist.test_labels[:n]
    probabilities = [load_model(p).predict_proba(images).astype(np.float64) for p in paths]
    mean = (probabilities[0] + probabilities[1]) / 2
    first, second = (p.argmax(axis=1) for p in probabilities)
    # by hand: agreeing members win; a 1-1 split goes to the larger mean (then the lower index)
    vote = [
        a if a == b or mean[i, a] > mean[i, b] or (mean[i, a] == mean[i, b] and a < b) else b
        for i, (a, b) in enumerate(zip(first, second, strict=True))
    ]

    capsys.readouterr()
    argv = ["ensemble", "evaluate", *map(str, paths), "--limit", str(n), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"members", "paths", "ensemble", "vote"}
    assert report["paths"] == [str(p) for p in paths]  # member i's accuracy is members[i]
    assert report["members"] == [float(np.mean(first == labels)), float(np.mean(second == labels))]
    assert report["ensemble"] == float(np.mean(mean.argmax(axis=1) == labels))
    assert report["vote"] == float(np.mean(np.array(vote) == labels))
    assert report["members"][0] != report["members"][1]


QUICK = ["--train-limit", "400", "--epochs", "2", "--batch-size", "50", "--no-progress"]


def _driver(out: Path, *extra: str, members: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "deepconvnet", "ensemble", "train", "--out", str(out)]
    return subprocess.Popen(
        [*command, "--members", str(members), "--threads", "2", *QUICK, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.mnist
@pytest.mark.slow
def test_train_in_two_workers_interrupt_and_resume(tmp_path, capsys):
    out = tmp_path / "ens"
    driver = _driver(out, "--checkpoint-every", "1")
    members = [out / "member-00", out / "member-01"]
    deadline = time.monotonic() + 60
    while not all((m / "checkpoint.npz").is_file() for m in members):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)  # the driver alone: it forwards the stop to its workers
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "member-00 interrupted; resumable" in stderr
    assert "ensemble train --resume" in stdout
    assert [run_state(m) for m in members] == ["resumable", "resumable"]

    capsys.readouterr()
    assert main(["ensemble", "train", "--resume", str(out)]) == 0
    printed = capsys.readouterr()
    assert "member-00 resuming (seed 0, 1 thread(s))" in printed.err
    assert "2/2 members finished" in printed.out
    configs = [json.loads((m / "config.json").read_text())["config"] for m in members]
    assert [c["seed"] for c in configs] == [0, 1]
    assert [c["threads"] for c in configs] == [1, 1]
    results = [json.loads((m / "results.json").read_text()) for m in members]
    assert [r["epochs"] for r in results] == [2, 2]
    assert results[0]["test_accuracy"] != results[1]["test_accuracy"]
    w0, w1 = (load_model(m).params()["0.W"] for m in members)
    assert not np.array_equal(w0, w1)

    assert main(["ensemble", "evaluate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["members"] == [r["test_accuracy"] for r in results]


@pytest.mark.mnist
@pytest.mark.slow
def test_more_members_than_workers_queue_and_an_interrupted_queue_resumes(tmp_path, capsys):
    """3 members on 1 worker run one at a time. Stopped while the second trains: the first is
    finished, the second resumable, the third never started; --resume leaves the first alone."""
    out = tmp_path / "ens"
    driver = _driver(out, "--checkpoint-every", "1", "--workers", "1", members=3)
    members = [out / f"member-0{i}" for i in range(3)]
    deadline = time.monotonic() + 120
    while not (members[1] / "checkpoint.npz").is_file():
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        assert not (members[2] / "config.json").exists()  # one worker: one member at a time
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    stdout, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert [run_state(m) for m in members[:2]] == ["finished", "resumable"]
    assert not (members[2] / "config.json").exists()  # queued, never started
    assert "member-01 interrupted; resumable" in stderr
    assert "ensemble train --resume" in stdout
    first = (members[0] / "model.npz").read_bytes()

    capsys.readouterr()
    assert main(["ensemble", "train", "--resume", str(out)]) == 0
    printed = capsys.readouterr()
    assert "member-00 already finished: test accuracy" in printed.err
    assert "member-01 resuming" in printed.err
    assert "3/3 members finished" in printed.out
    assert [run_state(m) for m in members] == ["finished"] * 3
    assert (members[0] / "model.npz").read_bytes() == first  # not trained again
    seeds = [json.loads((m / "config.json").read_text())["config"]["seed"] for m in members]
    assert seeds == [0, 1, 2]


@pytest.mark.mnist
def test_val_larger_than_the_training_set_starts_no_member(tmp_path, capsys):
    out = tmp_path / "ens"
    argv = ["ensemble", "train", "--out", str(out), "--members", "2", "--threads", "2"]
    assert main([*argv, *QUICK, "--val", "700"]) == 2
    *log, error = capsys.readouterr().err.splitlines()
    assert all(line.startswith("mnist: served by") for line in log), log
    assert error == "deepconvnet: error: --val 700 leaves no training images (of 400)"
    assert not out.exists()
    bn = ["--model", "deepconvnet-bn", "--train-limit", "301", "--epochs", "1", "--no-progress"]
    assert main([*argv, *bn]) == 2  # every member would refuse a last batch of one
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith(
        "301 training images in batches of 100 leave a last batch of 1; "
        "BatchNorm needs 2 or more (change --batch-size, --train-limit or --val)"
    )
    assert not out.exists()


@pytest.mark.mnist
def test_evaluate_refuses_a_member_of_another_input_shape(tmp_path, capsys):
    path = save_model(tmp_path / "colour.npz", build_model("deepconvnet", input_shape=(3, 28, 28)))
    assert main(["ensemble", "evaluate", str(path), "--limit", "10"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == (
        f"deepconvnet: error: {path}: the model expects input of shape (3, 28, 28) (C, H, W), "
        "but the mnist test images are (1, 28, 28)"
    )


@pytest.mark.mnist
def test_ray_backend_writes_members_from_returned_bytes(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "ens"
    argv = ["ensemble", "train", "--out", str(out), "--members", "2", "--threads", "2"]
    assert main([*argv, "--workers", "1", *QUICK, "--ray-address", "local"]) == 0
    printed = capsys.readouterr()
    assert "member-01 starting (seed 1, 2 thread(s)) on Ray (local)" in printed.err
    # --workers 1: Ray gets the second member only once the first is back, as a local run does
    assert printed.err.index("member-00 finished") < printed.err.index("member-01 starting")
    for index in (0, 1):
        run_dir = out / f"member-{index:02d}"
        assert {"config.json", "model.npz", "results.json", "metrics.jsonl"} <= {
            p.name for p in run_dir.iterdir()
        }
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert config["seed"] == index
        results = json.loads((run_dir / "results.json").read_text())
        assert f"test accuracy {results['test_accuracy']:.4f}" in printed.err
        assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == [
        "ensemble.json",
        "logs",
        "member-00",
        "member-01",
    ]


@pytest.mark.mnist
def test_ray_backend_on_a_running_cluster_with_token_authentication(tmp_path, monkeypatch):
    """--ray-address HOST:PORT against a real ``ray start --head``: the gRPC check lets the head
    through, a driver without its token is told so in one line (Ray's 20 s of retry log held
    back), and with the token the members train there."""
    ray = pytest.importorskip("ray")
    if tuple(int(part) for part in ray.__version__.split(".")[:2]) < (2, 52):
        pytest.skip("token authentication came with Ray 2.52")
    from deepconvnet.ensemble import _check_ray_head_answers

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    # Ray's own temporary directory, short for its sockets, so that the head's address file
    # (which a plain ray.init() would follow) does not outlive the test
    ray_tmp = Path(tempfile.mkdtemp(prefix="dcn-ray-"))
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    head = subprocess.Popen(
        [
            *(str(Path(sys.executable).with_name("ray")), "start", "--head", "--block"),
            *(f"--port={port}", "--num-cpus=2", "--include-dashboard=false"),
            "--disable-usage-stats",
        ],
        env={**os.environ, **token},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _answers(_check_ray_head_answers, address), seconds=60)
        out = tmp_path / "ens"
        argv = ["ensemble", "train", "--out", str(out), "--members", "1", "--threads", "1"]
        argv += [*QUICK, "--ray-address", address]
        # Ray reads its token once a process (and this one may have made its own), so each try
        # is a CLI run of its own
        refused = _cli_run(argv, {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""})
        assert refused.returncode == 2
        assert refused.stderr == (
            f"connecting to Ray at {address} ...\ndeepconvnet: error: cannot connect to Ray at "
            f"{address}: the cluster asks for token authentication: set RAY_AUTH_MODE=token (the "
            "token is read from RAY_AUTH_TOKEN or ~/.ray/auth_token, as on the head)\n"
        )
        assert not out.exists()

        trained = _cli_run(argv, token)
        assert trained.returncode == 0, trained.stderr
        assert f"member-00 starting (seed 0, 1 thread(s)) on Ray ({address})" in trained.stderr
        assert (out / "member-00" / "model.npz").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _cli_run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deepconvnet", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _answers(check: Callable[[str], bool], address: str) -> bool:
    try:
        return check(address)
    except DeepConvNetError:
        return False


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_ensemble_resume_refuses_options_it_would_ignore(tmp_path, capsys):
    """`ensemble train --resume DIR --epochs 3` used to exit 0 training with the saved epochs."""
    argv = ["ensemble", "train", "--resume", str(tmp_path), "--epochs", "3", "--seed", "4"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "deepconvnet: error: --resume carries on with the ensemble's saved options; drop "
        "--epochs, --seed (only --workers, --threads, --ray-address and --no-progress may be "
        "given with it)"
    )


def test_a_member_named_twice_is_refused(tmp_path):
    path = save_model(tmp_path / "m.npz", build_model("deepconvnet"))
    with pytest.raises(DeepConvNetError, match=r"m\.npz is .*m\.npz again: a member named twice"):
        (tmp_path / "sub").mkdir()
        member_model_paths([path, tmp_path / "sub" / ".." / "m.npz"])  # the same file again


def test_members_of_different_datasets_need_dataset(tmp_path, capsys):
    """The dataset used to be the first member's: the same members scored on MNIST or on
    Fashion-MNIST depending on the order they were named in."""
    runs = []
    for name in ("mnist", "fashion-mnist"):
        run = tmp_path / name
        save_model(run / "model.npz", build_model("deepconvnet"))
        (run / "config.json").write_text(json.dumps({"config": {"dataset": name}}))
        runs.append(str(run))
    assert main(["ensemble", "evaluate", *runs, "--limit", "10"]) == 2
    err = capsys.readouterr().err
    assert "members trained on different datasets" in err and "give --dataset" in err
    assert main(["ensemble", "evaluate", *runs, "--limit", "10", "--dataset", "mnist"]) == 0
    assert "on the mnist test set (10 images)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "text,words",
    [("", "unreadable results"), ("{}", "'test_accuracy'"), ('{"test_accuracy": "x"}', "numbers")],
)
def test_a_damaged_member_result_is_one_line(tmp_path, text, words):
    from deepconvnet.ensemble import _finished_result

    (tmp_path / "results.json").write_text(text)
    with pytest.raises(DeepConvNetError, match=words):
        _finished_result(0, tmp_path)


def test_resume_with_other_workers_keeps_each_members_threads(tmp_path):
    from deepconvnet.ensemble import load_plan
    from deepconvnet.train import TrainConfig

    plan = new_ensemble(plan_ensemble(TrainConfig(), tmp_path / "ens", 4, workers=2, threads=2))
    assert (plan.workers, plan.member_threads) == (2, 1)
    resumed = load_plan(plan.directory, workers=1)  # used to take every core for the one worker
    assert (resumed.workers, resumed.member_threads) == (1, 1)
    assert load_plan(plan.directory, workers=1, threads=2).member_threads == 2
