"""needle.distributed, DistributedDataParallel and DistributedSampler.

Three groups: the sampler and the error messages (no MPI needed); the collectives in this
process (a one-process MPI job; needs mpi4py); real jobs of 2 and 3 processes started with
``mpiexec`` (distributed_worker.py, next to this file, is what each rank runs). Every job has
a timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import distributed_worker as worker
import numpy as np
import pytest
from helpers.mpi import mpiexec, needs_mpi4py, needs_mpiexec

import needle as ndl
from needle import cli, distributed, nn, training
from needle.data import DataLoader, DistributedSampler, NDArrayDataset
from needle.nn.nn_distributed import _make_buckets


def run_worker(n: int, *args: Any, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run distributed_worker.py (next to this file) ARGS on ``n`` processes."""
    return mpiexec(n, Path(__file__).with_name("distributed_worker.py"), *args, env=env)


# ----- DistributedSampler (no MPI) ----------------------------------------------------------


def shards(n: int, replicas: int, **options) -> list[np.ndarray]:
    return [DistributedSampler(n, replicas, r, **options).indices() for r in range(replicas)]


@pytest.mark.parametrize("n, replicas", [(12, 3), (10, 3), (7, 2), (2, 3), (5, 1)])
def test_sampler_shards_are_disjoint_equal_and_cover_the_permutation(n, replicas):
    parts = shards(n, replicas, seed=3)
    assert (
        len({len(p) for p in parts})
        == 1
        == len({len(DistributedSampler(n, replicas, r).indices()) for r in range(replicas)})
    )
    assert len(parts[0]) == -(-n // replicas) == len(DistributedSampler(n, replicas, 0))
    everything = np.concatenate(parts)
    assert set(everything.tolist()) == set(range(n))
    # Only the padding repeats, and it is fewer than `replicas` samples.
    assert len(everything) - n == (-n) % replicas
    if n % replicas == 0:
        assert sorted(everything.tolist()) == list(range(n))


def test_sampler_ranks_interleave_one_shared_permutation():
    """Rank r of N gets positions r, r+N, ... of the order a 1-rank sampler draws."""
    order = DistributedSampler(12, 1, 0, seed=5).indices()
    for r, part in enumerate(shards(12, 3, seed=5)):
        np.testing.assert_array_equal(part, order[r::3])
    # Global batch b (per-rank batch 2) holds exactly positions 6b .. 6b+5 of the order.
    parts = shards(12, 3, seed=5)
    for b in range(2):
        batch = np.concatenate([p[2 * b : 2 * b + 2] for p in parts])
        assert sorted(batch.tolist()) == sorted(order[6 * b : 6 * b + 6].tolist())


def test_sampler_reshuffles_every_epoch_and_set_epoch_replays_one():
    sampler = DistributedSampler(50, 2, 1, seed=1)
    first, second = sampler.indices(), sampler.indices()
    assert sampler.epoch == 2 and not np.array_equal(first, second)
    sampler.set_epoch(1)
    np.testing.assert_array_equal(sampler.indices(), second)
    other_seed = DistributedSampler(50, 2, 1, seed=2).indices()
    assert not np.array_equal(first, other_seed)


def test_sampler_does_not_touch_numpys_global_generator():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    DistributedSampler(100, 2, 0).indices()
    assert np.random.rand() == expected


def test_sampler_drop_last_and_uneven_shards():
    dropped = shards(10, 3, shuffle=False, drop_last=True)
    assert [p.tolist() for p in dropped] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    uneven = shards(10, 3, shuffle=False, even=False)
    assert [p.tolist() for p in uneven] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(DistributedSampler(10, 3, r, even=False)) for r in range(3)] == [4, 3, 3]


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((10, 2, 2), {}, "rank 2 is not below num_replicas 2"),
        ((10, 0, 0), {}, "num_replicas must be an int >= 1, got 0"),
        ((10, 2, -1), {}, "rank must be an int >= 0, got -1"),
        ((10, 2, 0), {"seed": -1}, "seed must be an int >= 0"),
        ((2, 3, 0), {"drop_last": True}, "2 samples cannot give each of 3 ranks one"),
    ],
)
def test_sampler_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistributedSampler(*args, **kwargs)


def test_sampler_set_epoch_rejects_a_negative_epoch():
    with pytest.raises(ValueError, match="set_epoch: epoch must be an int >= 0, got -1"):
        DistributedSampler(4, 1, 0).set_epoch(-1)


def test_dataloader_batches_follow_the_sampler():
    dataset = NDArrayDataset(np.arange(10))
    sampler = DistributedSampler(10, 3, 1, shuffle=False)
    loader = DataLoader(dataset, 2, sampler=sampler)
    assert len(loader) == 2
    assert [b[0].numpy().tolist() for b in loader] == [[1, 4], [7, 0]]


def test_dataloader_rejects_shuffle_with_a_sampler():
    with pytest.raises(ValueError, match="shuffle=True and a sampler were both given"):
        DataLoader(
            NDArrayDataset(np.arange(4)), 2, shuffle=True, sampler=DistributedSampler(4, 1, 0)
        )


# ----- buckets and errors without MPI -------------------------------------------------------


def test_buckets_keep_order_respect_the_cap_and_split_dtypes():
    tensors = [
        ndl.Tensor(np.zeros(shape), dtype=dtype)
        for shape, dtype in [
            ((10,), "float32"),
            ((5, 2), "float32"),
            ((30,), "float32"),  # 40, 40, 120 bytes
            ((3,), "float64"),
            ((2,), "float32"),
        ]
    ]
    buckets = _make_buckets(tensors, cap_bytes=100)
    assert [[t.size for t in b.tensors] for b in buckets] == [[10, 10], [30], [3], [2]]
    assert [b.buffer.dtype.name for b in buckets] == ["float32"] * 2 + ["float64", "float32"]
    assert buckets[0].offsets == [0, 10, 20] and buckets[0].buffer.size == 20


def test_calls_before_init_say_to_call_init(monkeypatch):
    monkeypatch.setattr(distributed._STATE, "comm", None)
    for call in (
        distributed.rank,
        distributed.world_size,
        distributed.barrier,
        lambda: distributed.all_gather_object(1),
    ):
        with pytest.raises(distributed.NotInitializedError, match=r"call needle.distributed.init"):
            call()
    with pytest.raises(distributed.NotInitializedError, match="distributed.world_size"):
        nn.DistributedDataParallel(nn.Linear(2, 2))
    with pytest.raises(distributed.NotInitializedError):
        DistributedSampler(10)
    assert not distributed.is_initialized()


def test_init_without_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setattr(distributed._STATE, "comm", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    assert not distributed.is_available()
    with pytest.raises(distributed.MPIUnavailableError, match=r"needle-dl\[distributed\]"):
        distributed.init()
    with pytest.raises(distributed.NotInitializedError, match="mpi4py is not installed"):
        distributed.rank()


def test_launched_by_mpi_reads_the_launchers_environment(monkeypatch):
    for name in distributed._SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched_by_mpi() == 0
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert distributed.launched_by_mpi() == 4


# ----- collectives in this process (a job of one) -------------------------------------------


@pytest.fixture
def one_process(monkeypatch):
    """This process as a one-rank MPI job, for one test only.

    Afterwards needle forgets it (MPI itself stays initialised), so that other tests
    of this process, e.g. ``needle train`` in-process, are not data-parallel runs.
    """
    monkeypatch.setattr(distributed, "_STATE", distributed._State())
    distributed.init()
    yield


@needs_mpi4py
def test_a_single_process_is_a_job_of_one(one_process):
    assert distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    x = np.array([1.5, -2.0])
    np.testing.assert_array_equal(distributed.all_reduce(x, op="mean"), x)
    tensor = distributed.broadcast(ndl.Tensor(x, dtype="float32"))
    assert isinstance(tensor, ndl.Tensor) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor.numpy(), x.astype(np.float32))
    assert distributed.all_gather_object(("a", 1)) == [("a", 1)]
    distributed.barrier()


@needs_mpi4py
@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: distributed.all_reduce(np.ones(2), op="max"),
            ValueError,
            r"all_reduce: op='max'; expected one of \('sum', 'mean'\)",
        ),
        (
            lambda: distributed.all_reduce(np.ones(2, dtype=int), op="mean"),
            TypeError,
            "op='mean' needs a floating-point array, got dtype int64",
        ),
        (
            lambda: distributed.all_reduce([1.0, 2.0]),
            TypeError,
            "all_reduce: expected a needle.Tensor or a NumPy array, got list",
        ),
        (
            lambda: distributed.broadcast(np.ones(2), root=1),
            ValueError,
            r"broadcast: root=1 is not a rank of this job \(0 .. 0\)",
        ),
        (
            lambda: distributed.init(timeout=0),
            ValueError,
            r"distributed.init: timeout must be in \(0.0, inf\), got 0.0",
        ),
        (
            lambda: distributed.init(timeout="60"),
            TypeError,
            "distributed.init: timeout must be a real number, got str",
        ),
        (
            lambda: nn.DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0),
            ValueError,
            "bucket_cap_mb must be positive, got 0",
        ),
        (
            lambda: nn.DistributedDataParallel(lambda x: x),
            TypeError,
            "expected an nn.Module, got function",
        ),
    ],
)
def test_collective_errors(one_process, call, error, message):
    with pytest.raises(error, match=message):
        call()


@needs_mpi4py
def test_the_timeout_comes_from_the_environment(one_process, monkeypatch):
    monkeypatch.setenv("NEEDLE_DIST_TIMEOUT", "12.5")
    distributed.init()
    assert distributed._STATE.timeout == 12.5
    monkeypatch.setenv("NEEDLE_DIST_TIMEOUT", "ten")
    with pytest.raises(ValueError, match="NEEDLE_DIST_TIMEOUT='ten' is not a number of seconds"):
        distributed.init()


@needs_mpi4py
def test_a_collective_that_never_completes_raises_after_the_timeout(one_process):
    class Never:
        def Test(self):
            return False

    distributed.init(timeout=0.05)
    start = time.monotonic()
    with pytest.raises(
        distributed.PeerLostError,
        match=r"rank 0 of 1 waited 0 s .*timeout 0.05 s.*stopped calling test",
    ):
        distributed._wait(Never(), "test")
    assert time.monotonic() - start < 5


@needs_mpi4py
def test_ddp_of_one_process_keeps_gradients_and_state_dict_keys(one_process):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ddp = nn.DistributedDataParallel(model)
    assert list(ddp.state_dict()) == list(model.state_dict())
    assert ddp.parameters() == model.parameters()
    ddp(ndl.Tensor(np.random.randn(5, 3).astype("float32"))).sum().backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    model.parameters()[0].grad = None  # counts as zero
    ddp.sync_gradients()
    np.testing.assert_array_equal(model.parameters()[0].grad.numpy(), 0)
    for p, grad in list(zip(model.parameters(), before))[1:]:
        np.testing.assert_array_equal(p.grad.numpy(), grad)
    assert not ddp.eval().training and not model.modules[1].training


@needs_mpi4py
def test_ddp_averages_during_backward_and_refuses_unaveraged_steps(one_process):
    np.random.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ddp = nn.DistributedDataParallel(model, bucket_cap_mb=1e-5)  # a bucket per parameter
    opt = ndl.optim.SGD(ddp.parameters(), lr=0.1)
    X = ndl.Tensor(np.random.randn(5, 3).astype("float32"))
    ddp(X).sum().backward()
    averaged = [p.grad for p in model.parameters()]
    ddp.sync_gradients()  # already averaged: nothing happens
    assert all(p.grad is g for p, g in zip(model.parameters(), averaged))
    opt.step()
    with ddp.no_sync():
        ddp(X).sum().backward()
    with pytest.raises(RuntimeError, match="not averaged over the ranks.*sync_gradients"):
        opt.step()
    ddp.sync_gradients()
    opt.step()
    model.parameters()[0].grad = ndl.Tensor(np.ones((3, 4)), dtype="float32")
    with pytest.raises(RuntimeError, match="set by hand"):
        opt.step()


# ----- real jobs: 2 and 3 processes ---------------------------------------------------------


@needs_mpiexec
@pytest.mark.parametrize("n", [2, 3])
def test_collectives_across_processes(tmp_path, n):
    job = run_worker(n, "collectives", tmp_path)
    assert job.returncode == 0, job.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(n)]
    total = sum(r + 1 for r in range(n))
    for result in ranks:
        assert result["sum"] == [total * k for k in range(4)]
        np.testing.assert_allclose(
            result["mean_tensor"], [total / n * k for k in range(4)], rtol=1e-6
        )
        assert result["tensor_type"] == "Tensor" and result["input_unchanged"]
        assert result["broadcast"] == [n - 1] * 3
        assert result["gathered"] == [{"rank": r} for r in range(n)]
        assert "the ranks disagree" in result["mismatch"]
        assert f"rank {n - 1}: (({n},), '<f8', 'sum')" in result["mismatch"]


@needs_mpiexec
def test_replicas_start_from_rank_0_and_eval_takes_rank_0s_buffers(tmp_path):
    job = run_worker(3, "replicas", tmp_path)
    assert job.returncode == 0, job.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    for broadcast in ("True", "False"):
        steps = [r[broadcast] for r in ranks]
        params = {name: [s[name][0] for s in steps] for name in steps[0]}
        buffers = {name: [s[name][1] for s in steps] for name in steps[0]}
        assert len(set(params["built"])) == 3  # the ranks built different weights ...
        assert params["wrapped"] == [params["built"][0]] * 3  # ... and now hold rank 0's
        assert len(set(buffers["trained"])) == 3  # each rank's own batch statistics
        if broadcast == "True":
            assert buffers["eval"] == [buffers["trained"][0]] * 3  # rank 0's everywhere
        else:
            assert buffers["eval"] == buffers["trained"]  # each keeps its own


def reference_parameters(optimizer: str, epochs: int) -> dict[str, np.ndarray]:
    """Single-process training on the global batch, with the worker's own code."""
    model = worker.build_model()
    worker.train(model, worker.make_loader(1, 0), optimizer, epochs)
    return worker.parameters(model)


#: Tolerance of the data-parallel vs single-process comparison. The two runs differ only
#: in the order the per-sample gradients are summed (per rank, then across ranks, then
#: divided by N, instead of one sum divided by B): float32 round-off, ~1e-7 relative per
#: gradient element. A step changes a weight by lr × (a function of the gradient that is
#: smooth away from zero), so each of the 8 steps may add ~lr · 1e-7 ≈ 1e-8 plus one
#: rounding of the weight (~6e-8 for weights below 1): ~5e-7 in all. Measured: 1.8e-7.
#: 2e-6 is 10 times the measurement and 10^4 times below the weights' change in training,
#: so a wrong average (e.g. a sum) or a wrong shard fails.
EQUIVALENCE_ATOL = 2e-6


@needs_mpiexec
@pytest.mark.parametrize("n, optimizer", [(2, "adam"), (3, "sgd")])
def test_data_parallel_equals_one_process_on_the_global_batch(tmp_path, n, optimizer):
    epochs = 2  # 48 samples / global batch 12 = 4 steps per epoch
    job = run_worker(n, "train", tmp_path, optimizer, epochs)
    assert job.returncode == 0, job.stderr
    result = np.load(tmp_path / "result.npz")
    assert result["buckets"] > 1
    # Every rank held bit-identical parameters after every one of the 8 steps.
    assert result["identical"].tolist() == [True] * 8
    expected = reference_parameters(optimizer, epochs)
    initial = worker.parameters(worker.build_model())
    for name, value in expected.items():
        np.testing.assert_allclose(result[name], value, rtol=0, atol=EQUIVALENCE_ATOL, err_msg=name)
        assert np.abs(value - initial[name]).max() > 100 * EQUIVALENCE_ATOL, name


@needs_mpiexec
def test_the_pytorch_loop_keeps_replicas_identical_with_no_extra_call(tmp_path):
    """Ranks seeded differently, their own batches, `loss.backward(); opt.step()` only:
    the hooks average during backward, so every step leaves the replicas bit-identical."""
    job = run_worker(2, "pytorch_loop", tmp_path)
    assert job.returncode == 0, job.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["buckets"] > 1, "several buckets, started while backward runs"
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(set(ranks[0]["digests"])) == 4, "the parameters change every step"


@needs_mpiexec
def test_a_parameter_unused_in_a_later_micro_batch_keeps_its_accumulated_gradient(tmp_path):
    """backward(); backward(accumulate=True) with a head used only in the first micro-batch:
    DDP's gradients equal the micro-batches' local sums averaged once over the ranks."""
    job = run_worker(2, "unused_accumulate", tmp_path)
    assert job.returncode == 0, job.stderr
    for r in range(2):
        result = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert result["smallest_gradient_norm"] > 1e-3, "every parameter has a gradient"
        assert result["max_difference"] < 1e-6, result


@needs_mpiexec
def test_a_killed_rank_ends_the_job(tmp_path):
    """SIGKILL on one rank: the MPI launcher ends the job and names what happened."""
    start = time.monotonic()
    job = run_worker(3, "die", tmp_path, "KILL", env={"NEEDLE_DIST_TIMEOUT": "10"})
    assert time.monotonic() - start < 60
    assert job.returncode != 0
    assert "Killed (signal 9)" in job.stdout + job.stderr


@needs_mpiexec
def test_a_hung_rank_makes_the_others_stop_with_a_clear_error(tmp_path):
    """SIGSTOP on one rank (alive, silent): the others give up after the timeout."""
    start = time.monotonic()
    job = run_worker(3, "die", tmp_path, "STOP", env={"NEEDLE_DIST_TIMEOUT": "2"})
    assert time.monotonic() - start < 60
    assert job.returncode == 3, job.stderr
    # Whichever surviving rank (0 or 1) gives up first aborts the job. Its message is read
    # from the file the worker writes too: the abort can end mpiexec before it forwards stderr.
    said = "\n".join(p.read_text() for p in sorted(tmp_path.glob("error-rank*.txt")))
    assert re.search(
        r"rank ([01]): PeerLostError: distributed.DistributedDataParallel"
        r".sync_gradients: rank \1 of 3 waited 2 s for the other ranks",
        said,
    ), (said, job.stderr)


# ----- mpiexec -n N needle train ----------------------------------------------------------


def needle_train(n: int, data: Path, out: Path, *options: Any) -> subprocess.CompletedProcess:
    """``mpiexec -n n needle train`` on the tiny data set with a tiny model.

    One test sample only: every rank but rank 0 has an empty test shard.
    """
    return mpiexec(
        n,
        "-m",
        "needle",
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--batch-size",
        10,
        "--hidden-dim",
        16,
        "--num-blocks",
        1,
        "--limit-test",
        1,
        "--out",
        out,
        *options,
    )


@needs_mpiexec
def test_an_unexpected_error_in_needle_train_ends_the_job(tmp_path):
    """A bug on one rank (not a usage error) prints its traceback and aborts every rank."""
    code = textwrap.dedent("""
        from needle import cli, distributed, training
        def train(*args, **kwargs):
            if distributed.rank() == 1:
                raise RuntimeError("a bug on rank 1")
            distributed.barrier()  # rank 0 would wait here for ever
        training.train = train
        cli.main(["train", "--distributed"])
    """)
    start = time.monotonic()
    job = mpiexec(2, "-c", code)
    assert time.monotonic() - start < 60
    assert job.returncode != 0
    assert "RuntimeError: a bug on rank 1" in job.stderr


@needs_mpi4py
def test_needle_train_distributed_in_one_process(tiny_mnist, tmp_path, monkeypatch, capsys):
    """``--distributed`` without mpiexec: a job of one, with the data-parallel machinery."""
    monkeypatch.setattr(distributed, "_STATE", distributed._State())
    out = tmp_path / "run"
    options = [
        "--dataset",
        "mnist",
        "--data-dir",
        str(tiny_mnist),
        "--batch-size",
        "30",
        "--hidden-dim",
        "8",
        "--num-blocks",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(["train", *options, "--epochs", "1", "--distributed"]) == 0
    state = ndl.load(out / training.CHECKPOINT_NAME)
    assert state["world_size"] == 1 and len(state["rng_states"]) == 1
    assert cli.main(["train", *options, "--epochs", "2", "--resume", "--distributed"]) == 0
    monkeypatch.setattr(distributed, "_STATE", distributed._State())
    assert cli.main(["train", *options, "--epochs", "3", "--resume"]) == 2
    assert "it was a run on 1 process and this is a single-process run" in capsys.readouterr().err


@pytest.mark.slow  # four launches of needle train: ~20 s on 2 cores
@needs_mpiexec
def test_needle_train_on_two_processes_writes_once_and_resumes_exactly(tiny_mnist, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    job = needle_train(2, tiny_mnist, whole, "--epochs", 2)
    assert job.returncode == 0, job.stderr
    lines = job.stdout.splitlines()
    assert "data-parallel on 2 processes, global batch 20" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["1/2", "2/2"]  # rank 0 only
    assert sorted(p.name for p in whole.iterdir()) == sorted(
        [training.CHECKPOINT_NAME, training.METRICS_NAME, training.CURVES_NAME]
    )
    state = ndl.load(whole / training.CHECKPOINT_NAME)
    assert state["world_size"] == 2 and len(state["rng_states"]) == 2
    # The two ranks drew different dropout masks: their generators differ.
    assert not np.array_equal(state["rng_states"][0][1], state["rng_states"][1][1])

    assert needle_train(2, tiny_mnist, split, "--epochs", 1).returncode == 0
    job = needle_train(2, tiny_mnist, split, "--epochs", 2, "--resume")
    assert job.returncode == 0, job.stderr
    resumed = ndl.load(split / training.CHECKPOINT_NAME)
    for key, value in state["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], value, err_msg=key)
    for index, slots in state["optimizer"]["state"].items():
        for name, value in slots.items():
            np.testing.assert_array_equal(resumed["optimizer"]["state"][index][name], value)
    for saved, again in zip(state["rng_states"], resumed["rng_states"]):
        np.testing.assert_array_equal(saved[1], again[1])
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in state["history"]]
    assert strip == [{k: v for k, v in m.items() if k != "seconds"} for m in resumed["history"]]

    job = needle_train(3, tiny_mnist, split, "--epochs", 3, "--resume")
    assert job.returncode == 2
    assert (
        "it was a run on 2 processes and this is a run on 3 processes; resume with "
        "the same number of processes"
    ) in job.stderr


@needs_mpiexec
def test_a_resume_refused_on_every_rank_is_reported_once(tiny_mnist, tmp_path):
    """Every rank refuses the same resume: the job prints the error once, from rank 0."""
    out = tmp_path / "single"
    job = mpiexec(
        1,
        "-m",
        "needle",
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        tiny_mnist,
        "--batch-size",
        10,
        "--hidden-dim",
        16,
        "--num-blocks",
        1,
        "--limit-test",
        1,
        "--epochs",
        1,
        "--out",
        out,
    )
    assert job.returncode == 0, job.stderr
    job = needle_train(2, tiny_mnist, out, "--epochs", 2, "--resume")
    assert job.returncode == 2
    errors = [line for line in job.stderr.splitlines() if "error" in line]
    assert errors == [
        f"needle train: error: cannot resume {out / 'checkpoint.npz'}: it was a "
        f"single-process run and this is a run on 2 processes; resume with the "
        f"same number of processes (the global batch and the per-rank random "
        f"streams depend on it)"
    ], job.stderr


@needs_mpiexec
def test_needle_train_cnn_on_two_processes(tiny_mnist, tmp_path):
    """The convolutional model goes through the same data-parallel loop (BatchNorm2d too)."""
    out = tmp_path / "cnn"
    job = mpiexec(
        2,
        "-m",
        "needle",
        "train",
        "--model",
        "cnn",
        "--width",
        4,
        "--dataset",
        "mnist",
        "--data-dir",
        tiny_mnist,
        "--batch-size",
        20,
        "--epochs",
        1,
        "--out",
        out,
    )
    assert job.returncode == 0, job.stderr
    header, *epochs = job.stdout.splitlines()
    assert header.startswith("SmallCNN(width 4) on mnist (120 train / 40 test)")
    assert "data-parallel on 2 processes, global batch 40" in header
    assert len(epochs) == 1  # rank 0 only
    state = ndl.load(out / training.CHECKPOINT_NAME)
    assert state["config"]["network"]["model"] == "cnn" and len(state["rng_states"]) == 2


@needs_mpiexec
def test_accumulated_micro_batches_on_two_processes_equal_batches_twice_as_large(
    tiny_mnist, tmp_path
):
    """DistributedDataParallel averages inside every backward(accumulate=True): two
    micro-batches of 5 per rank and step give the step of one batch of 10 per rank (no
    BatchNorm, no dropout: --num-blocks 0; each rank's shard is the same in both runs)."""
    options = [
        "--num-blocks",
        0,
        "--optimizer",
        "adamw",
        "--lr",
        0.01,
        "--epochs",
        2,
        "--warmup-steps",
        2,
    ]
    job = needle_train(
        2, tiny_mnist, tmp_path / "accumulated", *options, "--batch-size", 5, "--grad-accum", 2
    )
    assert job.returncode == 0, job.stderr
    assert "global batch 20" in job.stdout.splitlines()[0]
    job = needle_train(2, tiny_mnist, tmp_path / "large", *options)
    assert job.returncode == 0, job.stderr
    accumulated = ndl.load(tmp_path / "accumulated" / training.CHECKPOINT_NAME)
    large = ndl.load(tmp_path / "large" / training.CHECKPOINT_NAME)
    assert accumulated["optimizer"]["t"] == large["optimizer"]["t"] == 12
    for key, value in large["model"].items():
        np.testing.assert_allclose(accumulated["model"][key], value, rtol=1e-5, atol=1e-6)


@needs_mpiexec
def test_clipping_is_refused_in_a_data_parallel_run(tiny_mnist, tmp_path):
    """Clipping would replace the averaged gradients, which the optimizer step refuses."""
    job = needle_train(2, tiny_mnist, tmp_path, "--clip-grad", 1)
    assert job.returncode == 2
    assert (
        "--clip-grad 1 in a data-parallel run: clipping replaces the gradients "
        "DistributedDataParallel averaged"
    ) in job.stderr
    assert not (tmp_path / training.CHECKPOINT_NAME).exists()


@needs_mpiexec
def test_an_uncaught_exception_in_a_users_own_loop_ends_the_job(tmp_path):
    """After init(), a rank that raises ends every rank at once, its traceback shown."""
    script = tmp_path / "my_loop.py"
    script.write_text(
        textwrap.dedent("""
        from needle import distributed
        distributed.init()
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")
        distributed.barrier()  # rank 0 would wait here for the 300 s timeout
    """)
    )
    start = time.monotonic()
    job = mpiexec(2, script, env={"NEEDLE_DIST_TIMEOUT": "300"})
    elapsed = time.monotonic() - start
    assert elapsed < 30, elapsed
    assert job.returncode != 0
    assert "Traceback (most recent call last)" in job.stderr, job.stderr
    assert "RuntimeError: rank 1 fails on purpose" in job.stderr
    assert "uncaught RuntimeError on rank 1 of 2; ending the job" in job.stderr
