"""Ensembles: N members trained with seeds seed, seed+1, ...; their softmax outputs averaged.

An ensemble directory holds ``ensemble.json`` (the shared configuration, the member count and the
thread budget), one ordinary run directory per member (``member-00``, ``member-01``, ...) and
``logs/member-XX.log`` (each member's own output). Every member is a plain run: ``deepconvnet
train --resume DIR/member-XX`` carries one on, ``deepconvnet evaluate`` evaluates one.

Members train in parallel worker *processes* (``python -m deepconvnet.ensemble member DIR I``),
never forked threads, each in its own session so that the driver alone decides when they stop:
Ctrl-C (or SIGTERM) is forwarded once, each member checkpoints and exits 130, and ``ensemble train
--resume DIR`` finishes whatever is unfinished. A Ray backend runs each member as a Ray task whose
result is the run directory's files as bytes, written atomically into ``DIR/member-XX`` by the
driver, so workers need not share a filesystem. Nothing crosses a process boundary as a pickle of
ours: configurations travel as JSON, results as bytes.
"""

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from deepconvnet.errors import EXIT_INTERRUPTED, DeepConvNetError
from deepconvnet.fileio import atomic_write_bytes, atomic_write_json, check_fresh_dir, one_line
from deepconvnet.models import INFERENCE_BATCH
from deepconvnet.train import (
    RESULTS,
    TrainConfig,
    clear_unstarted_run,
    read_results,
    run_state,
    stop_signals,
    value_problem,
)

MANIFEST = "ensemble.json"
LOGS = "logs"
MEMBER_PREFIX = "member-"
MAX_MEMBERS = 1000  # far beyond any ensemble worth training; a larger count is a corrupt file

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Combining members' outputs


def average_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The members' softmax outputs (each (N, K)) averaged: the ensemble's probabilities."""
    stacked = _stack(probabilities)
    return stacked.mean(axis=0, dtype=np.float64)


def majority_vote(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Each member votes for its argmax; the most-voted class wins (N,).

    Ties between classes with equally many votes go to the one with the higher averaged
    probability (then the lower index), so an even split is decided by the members' confidence.
    """
    stacked = _stack(probabilities)
    n_members, n, k = stacked.shape
    votes = np.zeros((n, k), dtype=np.int64)
    np.add.at(votes, (np.arange(n)[None, :].repeat(n_members, 0), stacked.argmax(axis=2)), 1)
    average = stacked.mean(axis=0, dtype=np.float64)
    tied = votes == votes.max(axis=1, keepdims=True)
    return np.where(tied, average, -np.inf).argmax(axis=1)


def score_ensemble(probabilities: Sequence[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
    """``{"members": [accuracy...], "ensemble": averaged-probability accuracy, "vote": ...}``."""
    labels = np.asarray(labels)
    stacked = _stack(probabilities)
    if stacked.shape[1] != len(labels):
        raise DeepConvNetError(f"{stacked.shape[1]} predictions for {len(labels)} labels")

    def accuracy(predicted: np.ndarray) -> float:
        return float(np.mean(predicted == labels)) if len(labels) else 0.0

    return {
        "members": [accuracy(p.argmax(axis=1)) for p in stacked],
        "ensemble": accuracy(average_probabilities(stacked).argmax(axis=1)),
        "vote": accuracy(majority_vote(stacked)),
    }


def _stack(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    arrays = [np.asarray(p) for p in probabilities]
    if not arrays:
        raise DeepConvNetError("an ensemble needs at least one member")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise DeepConvNetError(f"members' probabilities differ in shape: {sorted(shapes)}")
    return np.stack(arrays)


# --------------------------------------------------------------------------------------------
# Members on disk


def member_dir(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"{MEMBER_PREFIX}{index:02d}"


def member_model_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The ``model.npz`` of every member named by ``paths``.

    Each path is an ensemble directory (every member its ``ensemble.json`` counts; without one,
    the ``member-XX`` folders it holds; each finished), a run directory, or a model file.
    """
    from deepconvnet.checkpoint import resolve_model_path

    models: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / MANIFEST).exists():
            models += _ensemble_models(path, _counted_members(path))
        elif path.is_dir() and (found := sorted(path.glob(f"{MEMBER_PREFIX}[0-9]*"))):
            models += _ensemble_models(path, found)  # assembled by hand: the folders present
        else:
            if path.is_dir() and run_state(path) == "resumable":  # as for members, above
                raise _unfinished(path, f"deepconvnet train --resume {path}")
            models.append(resolve_model_path(path))
    if not models:
        raise DeepConvNetError("no ensemble members given")
    first_named: dict[Path, Path] = {}
    for model in models:
        earlier = first_named.setdefault(model.resolve(), model)
        if earlier is not model:
            raise DeepConvNetError(
                f"{model} is {earlier} again: a member named twice counts double"
            )
    return models


def _counted_members(directory: Path) -> list[Path]:
    """The member folders ``ensemble.json`` counts, all present: a missing member is refused
    rather than silently leaving a smaller ensemble than the one trained."""
    members = read_manifest(directory)[1]["members"]
    run_dirs = [member_dir(directory, i) for i in range(members)]
    missing = [run_dir.name for run_dir in run_dirs if not run_dir.is_dir()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(missing[:3]) + more
        raise DeepConvNetError(
            f"{directory}: {MANIFEST} counts {members} members but {shown} "
            f"{'is' if len(missing) == 1 else 'are'} missing; train them with "
            f"deepconvnet ensemble train --resume {directory}"
        )
    return run_dirs


def _ensemble_models(directory: Path, run_dirs: list[Path]) -> list[Path]:
    """The model file of each member run, every one finished."""
    from deepconvnet.checkpoint import resolve_model_path

    for run_dir in run_dirs:
        if not (run_dir / RESULTS).is_file():
            raise _unfinished(run_dir, f"deepconvnet ensemble train --resume {directory}")
    return [resolve_model_path(run_dir) for run_dir in run_dirs]


def _unfinished(run_dir: Path, finish: str) -> DeepConvNetError:
    """A run an ensemble cannot count yet: its test figures would be some epoch's, not its own."""
    return DeepConvNetError(f"{run_dir} is unfinished (no {RESULTS}); finish it with {finish}")


def member_probabilities(
    model_paths: Sequence[Path],
    images: np.ndarray,
    batch_size: int = INFERENCE_BATCH,
    source: str = "the test images",
    classes: int | None = None,
) -> list[np.ndarray]:
    """Each member's softmax probabilities on float NCHW ``images``, one model in memory at once.

    A member whose input shape is not the images' (or whose outputs are not ``classes``) is
    refused in one line naming it and ``source`` (the images' name).
    """
    return [
        _member_model(p, images, source, classes).predict_proba(images, batch_size)
        for p in model_paths
    ]


def _member_model(path: Path, images: np.ndarray, source: str, classes: int | None):
    """Load one member, checked against the images before it sees them."""
    from deepconvnet.checkpoint import check_model_fits, load_model

    model = load_model(path)
    check_model_fits(model, images.shape[1:], source, name=path, classes=classes)
    return model


def evaluate_ensemble(
    paths: Sequence[str | Path],
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = INFERENCE_BATCH,
    source: str = "the test images",
    classes: int | None = None,
) -> dict[str, Any]:
    """:func:`score_ensemble` of the members named by ``paths`` on ``images`` / ``labels``
    (named ``source`` in errors, of ``classes`` classes), plus ``"paths"`` (the model files used,
    in member order)."""
    models = member_model_paths(paths)
    probabilities = member_probabilities(models, images, batch_size, source, classes)
    report = score_ensemble(probabilities, labels)
    return {**report, "paths": [str(p) for p in models]}


# --------------------------------------------------------------------------------------------
# The plan: what to train, with how many workers and threads


@dataclass
class EnsemblePlan:
    """An ensemble to train: the shared config, N members, W workers of ``member_threads`` each."""

    directory: Path
    config: TrainConfig
    members: int
    workers: int
    member_threads: int

    def member_config(self, index: int) -> TrainConfig:
        """Member ``index``: the shared config with seed + index and its share of the threads."""
        return replace(self.config, seed=self.config.seed + index, threads=self.member_threads)

    def save(self) -> None:
        atomic_write_json(
            self.directory / MANIFEST,
            {
                "config": asdict(self.config),
                "members": self.members,
                "workers": self.workers,
                "member_threads": self.member_threads,
            },
        )


def plan_ensemble(
    config: TrainConfig,
    directory: str | Path,
    members: int,
    workers: int | None = None,
    threads: int | None = None,
) -> EnsemblePlan:
    """Share ``threads`` (default: all cores) among ``workers`` (default: min(members, threads)).

    More workers than members would idle, so the workers are clamped to the members *before* the
    threads are divided: --workers 4 --members 2 --threads 4 gives 2 workers of 2 threads each.
    """
    if not 1 <= members <= MAX_MEMBERS:
        raise DeepConvNetError(f"--members must be in [1, {MAX_MEMBERS}], got {members}")
    total = threads if threads is not None else (os.cpu_count() or 1)
    asked = workers if workers is not None else min(members, total)
    if asked < 1:
        raise DeepConvNetError(f"--workers must be >= 1, got {asked}")
    workers = min(asked, members)
    if workers > total:
        raise DeepConvNetError(
            f"--workers {asked} exceeds the thread budget --threads {total} "
            "(each worker needs at least one thread)"
        )
    return EnsemblePlan(Path(directory), config, members, workers, total // workers)


def check_members_can_start(plan: EnsemblePlan) -> None:
    """Refuse now what every member would refuse after starting: the dataset (``--dataset``,
    ``--data-dir``), the ``--train-limit`` / ``--val`` split and BatchNorm's batches of one,
    checked exactly as
    :func:`deepconvnet.train.train` checks them (members differ only in seed and threads, which
    these checks do not depend on). The driver calls this before it creates or touches the
    ensemble directory, so bad input is one line and leaves nothing behind.
    """
    from deepconvnet.data import load_dataset
    from deepconvnet.train import check_batch_statistics, split_training_set

    if all(run_state(member_dir(plan.directory, i)) == "finished" for i in range(plan.members)):
        return  # nothing will start
    config = plan.member_config(0)
    dataset = load_dataset(config.dataset, config.data_dir)
    train_images = split_training_set(dataset, config)[0]
    check_batch_statistics(config, len(train_images))


def new_ensemble(plan: EnsemblePlan) -> EnsemblePlan:
    """Create the ensemble directory and its manifest; refuse a directory already in use."""
    directory = plan.directory
    check_fresh_dir(
        directory, f"use ensemble train --resume {directory} to finish it, or choose another --out"
    )
    try:
        (directory / LOGS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepConvNetError(f"cannot create {directory}: {exc.strerror}") from exc
    plan.save()
    return plan


def load_plan(
    directory: str | Path, workers: int | None = None, threads: int | None = None
) -> EnsemblePlan:
    """The plan saved in ``directory``; ``workers`` / ``threads`` may be changed for the rest.

    Without ``threads``, each member keeps the thread count it was planned with, whatever the
    workers: a member's results are bit-identical only at the same thread count.
    """
    config, counts = read_manifest(directory)
    if threads is None and workers is None:
        return EnsemblePlan(Path(directory), config, **counts)
    if threads is None:
        threads = counts["member_threads"] * min(workers, counts["members"])
    return plan_ensemble(config, directory, counts["members"], workers, threads)


# The manifest's counts; each is at least 1, as --members, --workers and --threads are.
MANIFEST_COUNTS = ("members", "workers", "member_threads")


def read_manifest(directory: str | Path) -> tuple[TrainConfig, dict[str, int]]:
    """``ensemble.json``'s shared config and counts, checked here, where every reader gets them:
    a hand-edited or corrupt value is one line naming the file and the value, never a traceback,
    a hang or an ensemble of no members."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeepConvNetError(f"{directory}: not an ensemble directory (no {MANIFEST})") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise DeepConvNetError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise DeepConvNetError(f"{path}: not an ensemble manifest (a JSON {type(data).__name__})")
    missing = [name for name in ("config", *MANIFEST_COUNTS) if name not in data]
    if missing:
        raise DeepConvNetError(f"{path}: no {', '.join(missing)}")
    if not isinstance(data["config"], dict):
        raise DeepConvNetError(f"{path}: config is {data['config']!r} (expected an object)")
    config = TrainConfig.from_dict(data["config"])
    problems = (value_problem(name, data[name], (int,), 1) for name in MANIFEST_COUNTS)
    problem = next(filter(None, problems), None) or config.problem()
    if not problem and data["members"] > MAX_MEMBERS:
        problem = f"members is {data['members']} (expected at most {MAX_MEMBERS})"
    if problem:
        raise DeepConvNetError(f"{path}: {problem}")
    return config, {name: data[name] for name in MANIFEST_COUNTS}


# --------------------------------------------------------------------------------------------
# Training: local worker processes


@dataclass
class MemberResult:
    index: int
    run_dir: Path
    status: str  # "finished", "failed" or "interrupted"
    test_accuracy: float | None = None
    seconds: float = 0.0
    error: str | None = None


def train_ensemble(
    plan: EnsemblePlan,
    *,
    ray_address: str | None = None,
    log: Log | None = None,
) -> list[MemberResult]:
    """Train every unfinished member of ``plan``; returns one result per member, in order.

    Members already finished are reported as such without work; a member with a checkpoint is
    resumed. One line is logged per member start and finish (with its test accuracy or error).
    """
    log = log or _print_err
    todo = [
        i for i in range(plan.members) if run_state(member_dir(plan.directory, i)) != "finished"
    ]
    done = {
        i: _finished_result(i, member_dir(plan.directory, i))
        for i in range(plan.members)
        if i not in todo
    }
    for result in done.values():
        log(f"{result.run_dir.name} already finished: test accuracy {result.test_accuracy:.4f}")
    if todo:
        runner = _run_ray if ray_address else _run_local
        for result in runner(plan, todo, log, ray_address):
            done[result.index] = result
    return [done[i] for i in range(plan.members)]


def _finished_result(index: int, run_dir: Path) -> MemberResult:
    """A finished member's figures from its results.json; a damaged file is one line."""
    results = read_results(run_dir)
    return MemberResult(
        index, run_dir, "finished", results["test_accuracy"], results["train_seconds"]
    )


def _start_line(plan: EnsemblePlan, index: int, where: str) -> str:
    run_dir = member_dir(plan.directory, index)
    verb = "resuming" if run_state(run_dir) == "resumable" else "starting"
    return (
        f"{run_dir.name} {verb} (seed {plan.member_config(index).seed}, "
        f"{plan.member_threads} thread(s)){where}"
    )


def _finish_line(result: MemberResult) -> str:
    minutes = f"{result.seconds / 60:.1f} min"
    if result.status == "finished":
        return (
            f"{result.run_dir.name} finished: test accuracy {result.test_accuracy:.4f} ({minutes})"
        )
    if result.status == "interrupted":
        return f"{result.run_dir.name} interrupted; resumable ({minutes})"
    return f"{result.run_dir.name} FAILED: {result.error}"


def _run_local(plan: EnsemblePlan, todo: list[int], log: Log, _address: Any) -> list[MemberResult]:
    """Up to ``plan.workers`` member processes at once; a signal stops them all cleanly."""
    (plan.directory / LOGS).mkdir(parents=True, exist_ok=True)
    pending, running, results = list(todo), {}, []
    with _forwarded_signals(running) as stop:
        while running or (pending and not stop.requested):
            while pending and len(running) < plan.workers and not stop.requested:
                index = pending.pop(0)
                log(_start_line(plan, index, f", log {plan.directory / LOGS}"))
                running[index] = _start_member_process(plan, index)
            for index, (process, started, _) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[index]
                result = _process_result(plan, index, process.returncode, started)
                log(_finish_line(result))
                results.append(result)
            time.sleep(0.1)
    results += [
        MemberResult(i, member_dir(plan.directory, i), "interrupted", error="not started")
        for i in pending
    ]
    return results


def _log_path(plan: EnsemblePlan, index: int) -> Path:
    return plan.directory / LOGS / f"{member_dir(plan.directory, index).name}.log"


def _start_member_process(plan: EnsemblePlan, index: int):
    command = [sys.executable, "-m", "deepconvnet.ensemble", "member", str(plan.directory)]
    with open(_log_path(plan, index), "ab") as out:
        process = subprocess.Popen(
            [*command, str(index)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the terminal's Ctrl-C reaches the driver only
        )
    return process, time.perf_counter(), index


def _process_result(plan: EnsemblePlan, index: int, code: int, started: float) -> MemberResult:
    run_dir = member_dir(plan.directory, index)
    seconds = time.perf_counter() - started
    if code == 0 and run_state(run_dir) == "finished":
        result = _finished_result(index, run_dir)
        result.seconds = seconds
        return result
    if code in (EXIT_INTERRUPTED, -signal.SIGTERM, -signal.SIGINT):
        return MemberResult(index, run_dir, "interrupted", seconds=seconds)
    return MemberResult(
        index, run_dir, "failed", seconds=seconds, error=_last_error(_log_path(plan, index), code)
    )


def _last_error(log_path: Path, code: int) -> str:
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = lines[-1].strip() if lines else "no output"
    return f"exit code {code}: {last} (log: {log_path})"


class _Stop:
    requested = False


@contextmanager
def _forwarded_signals(running: dict) -> Iterator[_Stop]:
    """SIGINT/SIGTERM to the driver: stop starting members, pass the signal on to running ones
    (once: each finishes its step and checkpoints; a second signal stops them at once)."""
    stop = _Stop()

    def forward(signum: int, frame: Any) -> None:
        if not stop.requested:
            print(
                f"\n{signal.Signals(signum).name} received: stopping members after their current "
                "step (they checkpoint; finish them with ensemble train --resume)",
                file=sys.stderr,
                flush=True,
            )
        stop.requested = True
        for process, _, _ in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    with stop_signals(forward):
        yield stop


def run_member(directory: str | Path, index: int) -> int:
    """Train (or resume) member ``index`` of the ensemble in ``directory``: the worker's job."""
    from deepconvnet.train import TrainingInterrupted, train

    plan = load_plan(directory)
    run_dir = member_dir(plan.directory, index)
    state = run_state(run_dir)
    if state == "finished":
        return 0
    if state == "new":
        clear_unstarted_run(run_dir)
    try:
        train(plan.member_config(index), run_dir, resume=state == "resumable", progress=False)
    except TrainingInterrupted as stop:
        print(f"deepconvnet: {stop}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# --------------------------------------------------------------------------------------------
# Training: Ray


RAY_CONNECT_TIMEOUT_S = 3.0  # a HOST:PORT that does not answer in this time is no Ray head
# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, 3.4): a gRPC server,
# as Ray's GCS is, answers with a SETTINGS frame of its own.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4  # the frame type, byte 3 of a frame's 9-byte header


@contextmanager
def ray_connection(address: str | None) -> Iterator[None]:
    """Connect to Ray (``local``: start one in this process) and disconnect after, if connected
    here. The CLI enters it before the ensemble's directory is made, so that a wrong address is
    one line and leaves nothing behind; None (no Ray) does nothing."""
    if not address:
        yield
        return
    try:
        import ray
    except ImportError:
        raise DeepConvNetError(
            "the Ray backend needs Ray: pip install 'deepconvnet[ray]'"
        ) from None
    if ray.is_initialized():
        yield
        return
    if address == "local":  # a new instance, even where `ray start` left one (or its address)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    else:
        _connect_to_ray_head(ray, address, announce=_check_ray_head_answers(address))
    try:
        yield
    finally:
        ray.shutdown()


def _connect_to_ray_head(ray: Any, address: str, announce: bool = True) -> None:
    """``ray.init`` on a running cluster. Ray's core logs each failed attempt to fd 2, a line a
    second for about 20 s, so that output is held back and shown only if the connection is made;
    a failure is one line, naming token authentication when that is what was refused.
    ``announce``: say first that we are connecting (to a head known to answer, where Ray may
    take those 20 s)."""
    if announce:
        print(f"connecting to Ray at {address} ...", file=sys.stderr, flush=True)
    with _stderr_held():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ValueError, ConnectionError, RuntimeError) as exc:
            raise DeepConvNetError(
                f"cannot connect to Ray at {address}: {_ray_failure(exc)}"
            ) from exc


def _ray_failure(exc: BaseException) -> str:
    """What a failed ``ray.init`` says, with the usual cause, a missing token, put plainly."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and len(chain) < 10:
        chain.append(cause)
    if not any("InvalidAuthToken" in str(e) or "AuthenticationError" in str(e) for e in chain):
        return one_line(exc)
    if os.environ.get("RAY_AUTH_MODE", "disabled") != "token":
        return (
            "the cluster asks for token authentication: set RAY_AUTH_MODE=token (the token is "
            "read from RAY_AUTH_TOKEN or ~/.ray/auth_token, as on the head)"
        )
    return "the cluster refused this machine's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"


@contextmanager
def _stderr_held() -> Iterator[None]:
    """Send what is written to file descriptor 2 (C++ logs) and to ``sys.stderr`` (Python's) to
    a temporary file while the block runs; copy it to stderr after, unless the block raised."""
    sys.stderr.flush()
    saved, saved_stream = os.dup(2), sys.stderr
    finished = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 (closed below)
        try:
            yield
            finished = True
        finally:
            sys.stderr.close()
            sys.stderr = saved_stream
            os.dup2(saved, 2)
            os.close(saved)
            if finished:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                sys.stderr.flush()


def _check_ray_head_answers(address: str) -> bool:
    """A plain HOST:PORT must answer as a gRPC server within RAY_CONNECT_TIMEOUT_S: Ray itself
    retries a head that does not for minutes, logging a line every few seconds. False: not
    checked (an address of another form, or TLS), so Ray judges it alone."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return False  # ray://..., auto, or something Ray will judge itself
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return False  # a TLS head answers the handshake, not plain HTTP/2
    try:
        with socket.create_connection((host, int(port)), timeout=RAY_CONNECT_TIMEOUT_S) as conn:
            conn.sendall(HTTP2_PREFACE)
            reply = _read_up_to(conn, 9)
    except (OSError, ValueError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else one_line(exc)
        raise DeepConvNetError(f"cannot connect to Ray at {address}: {why}") from exc
    if len(reply) < 9 or reply[3] != HTTP2_SETTINGS:
        raise DeepConvNetError(
            f"cannot connect to Ray at {address}: it answers, but not as a Ray head (gRPC)"
        )
    return True


def _read_up_to(conn: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes, fewer if the peer closes first."""
    data = b""
    while len(data) < size and (chunk := conn.recv(size - len(data))):
        data += chunk
    return data


def _run_ray(plan: EnsemblePlan, todo: list[int], log: Log, address: str) -> list[MemberResult]:
    """Each member a Ray task (``member_threads`` CPUs) returning its run directory as bytes."""
    with ray_connection(address):
        return _ray_members(plan, todo, log, address)


def _ray_members(plan: EnsemblePlan, todo: list[int], log: Log, address: str) -> list[MemberResult]:
    """The members as Ray tasks, ``plan.workers`` at a time, on the connected Ray."""
    import ray

    task = ray.remote(num_cpus=plan.member_threads, max_retries=0)(train_member_files)
    refs, results, waiting = {}, [], list(todo)

    def submit(index: int) -> None:
        log(_start_line(plan, index, f" on Ray ({address})"))
        run_dir = member_dir(plan.directory, index)
        resume_files = read_run_files(run_dir) if run_state(run_dir) == "resumable" else {}
        config = json.dumps(asdict(plan.member_config(index)))
        refs[task.remote(config, resume_files)] = (index, time.perf_counter())

    try:
        while waiting or refs:
            while waiting and len(refs) < plan.workers:  # --workers members at once, as locally
                submit(waiting.pop(0))
            ready, _ = ray.wait(list(refs), num_returns=1)
            index, started = refs.pop(ready[0])
            result = _ray_result(plan, index, ready[0], started)
            log(_finish_line(result))
            results.append(result)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        stopped = [i for i, _ in refs.values()] + waiting
        results += [MemberResult(i, member_dir(plan.directory, i), "interrupted") for i in stopped]
        log("interrupted: members not yet returned were cancelled (finished ones are saved)")
    return results


def _ray_result(plan: EnsemblePlan, index: int, ref: Any, started: float) -> MemberResult:
    import ray

    run_dir = member_dir(plan.directory, index)
    seconds = time.perf_counter() - started
    try:
        files = ray.get(ref)
    except Exception as exc:  # RayTaskError wraps the member's own exception
        cause = getattr(exc, "cause", None) or exc
        return MemberResult(index, run_dir, "failed", seconds=seconds, error=_one_line(cause))
    write_run_files(run_dir, files)
    result = _finished_result(index, run_dir)
    result.seconds = seconds
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def train_member_files(config_json: str, resume_files: dict[str, bytes]) -> dict[str, bytes]:
    """Train one member in a private temporary directory and return that run directory's files
    (relative path -> bytes). Runs on a Ray worker, which needs no shared filesystem."""
    from deepconvnet.train import train

    config = TrainConfig.from_dict(json.loads(config_json))
    with tempfile.TemporaryDirectory(prefix="deepconvnet-member-") as tmp:
        run_dir = Path(tmp) / "run"
        write_run_files(run_dir, resume_files)
        train(config, run_dir, resume=bool(resume_files), progress=False)
        return read_run_files(run_dir)


def read_run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file under ``run_dir`` as relative POSIX path -> bytes."""
    return {
        p.relative_to(run_dir).as_posix(): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def write_run_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` as ``run_dir``, atomically: into a sibling temporary directory (each file
    written atomically), then swapped into place, so a reader sees the old run or the new one."""
    if not files:
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        for name, data in files.items():
            target = (staging / name).resolve()
            if not target.is_relative_to(staging.resolve()):
                raise DeepConvNetError(f"refusing to write {name!r} outside {run_dir}")
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        os.replace(staging, run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _print_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _main(argv: Sequence[str]) -> int:
    """``python -m deepconvnet.ensemble member DIR INDEX``: one worker process."""
    if len(argv) != 3 or argv[0] != "member":
        print("usage: python -m deepconvnet.ensemble member DIR INDEX", file=sys.stderr)
        return 2
    try:
        return run_member(argv[1], int(argv[2]))
    except DeepConvNetError as exc:
        print(f"deepconvnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
