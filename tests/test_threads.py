"""The BLAS thread policy: its arithmetic, the machine readings, user settings winning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from deepnet import threads
from deepnet.errors import InputError


@pytest.mark.parametrize(
    ("cores", "ranks", "readers", "others", "want"),
    [
        (2, 1, 0, 0, 2),  # a quiet 2-core machine: both cores
        (2, 1, 0, 1, 1),  # one core busy elsewhere: one thread
        (2, 1, 1, 0, 1),  # the read-ahead thread takes a core
        (2, 2, 0, 0, 1),  # two ranks share the node
        (16, 4, 0, 0, 4),
        (16, 4, 1, 0, 3),
        (16, 4, 0, 8, 2),  # half the node busy: the rest shared out
        (16, 3, 0, 0, 5),  # floor, never more than the share
        (2, 8, 0, 0, 1),  # more ranks than cores: at least one
        (2, 1, 0, 5, 1),  # a machine busier than its cores: at least one
        (1, 1, 3, 0, 1),
    ],
)
def test_choose_threads_never_oversubscribes(cores, ranks, readers, others, want):
    got = threads.choose_threads(cores, ranks, readers, others)
    assert got == want
    # Never more threads (with readers) per rank than the free cores allow, when any are free.
    if cores - others >= ranks * (readers + 1):
        assert ranks * (got + readers) <= cores - others


def test_local_ranks_from_launchers():
    assert threads.local_ranks({}) == 1
    assert threads.local_ranks({"MPI_LOCALNRANKS": "2"}) == 2
    assert threads.local_ranks({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}) == 4
    assert threads.local_ranks({"PMI_LOCAL_SIZE": "3"}) == 3
    assert threads.local_ranks({"SLURM_NTASKS_PER_NODE": "2(x3)"}) == 2
    assert threads.local_ranks({"MPI_LOCALNRANKS": "junk", "PMI_LOCAL_SIZE": "0"}) == 1


def test_user_settings_win():
    plan = threads.plan(env={"OPENBLAS_NUM_THREADS": "1"}, cores=16, ranks=1, others=0)
    assert plan.threads is None and "OPENBLAS_NUM_THREADS" in plan.reason
    assert threads.plan(env={"OMP_NUM_THREADS": "3"}, cores=16).threads is None
    own = threads.plan(env={"DEEPNET_BLAS_THREADS": "3", "OMP_NUM_THREADS": "1"})
    assert own.threads == 3
    with pytest.raises(InputError, match="DEEPNET_BLAS_THREADS"):
        threads.plan(env={"DEEPNET_BLAS_THREADS": "many"})


def test_plan_under_mpi_with_a_reader():
    env = {"MPI_LOCALNRANKS": "2"}
    plan = threads.plan(1, env=env, cores=8, others=0)
    assert (plan.threads, plan.ranks, plan.readers) == (3, 2, 1)


def test_machine_readings(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.20 0.80 0.50 3/412 12345\n")
    assert threads.runnable_tasks(loadavg) == 3
    loadavg.write_text("garbage\n")
    assert threads.runnable_tasks(loadavg) is None
    assert threads.runnable_tasks(tmp_path / "missing") is None
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert threads.cgroup_quota(cpu_max) == 2
    cpu_max.write_text("max 100000\n")
    assert threads.cgroup_quota(cpu_max) is None
    tasks = tmp_path / "task"
    for tid, state in ((1, "R"), (2, "S"), (3, "R")):
        (tasks / str(tid)).mkdir(parents=True)
        (tasks / str(tid) / "stat").write_text(f"{tid} (python (x) y) {state} 1 2 3\n")
    assert threads.own_running_threads(tasks) == 2
    assert threads.own_running_threads(tmp_path / "none") == 1


def test_other_load_discounts_this_process_and_its_ranks(monkeypatch):
    monkeypatch.setattr(threads, "runnable_tasks", lambda: 5)
    monkeypatch.setattr(threads, "own_running_threads", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    assert threads.other_load(ranks=1, cores=4) == 3
    assert threads.other_load(ranks=3, cores=4) == 1
    assert threads.other_load(ranks=1, cores=2) == 1  # scaled to our 2 of the 4 CPUs
    readings = iter([5, 9, 4])  # a short task in the second reading; one of ours in the third
    own = iter([2, 2, 3])
    monkeypatch.setattr(threads, "runnable_tasks", lambda: next(readings))
    monkeypatch.setattr(threads, "own_running_threads", lambda: next(own))
    assert threads.other_load(ranks=1, cores=4) == 1
    monkeypatch.setattr(threads, "runnable_tasks", lambda: None)
    assert threads.other_load() == 0


def test_blas_threads_applies_and_restores_the_limit():
    before = threads.blas_info()["threads"]
    decided = threads.ThreadPlan(1, "test")
    with threads.blas_threads(decided=decided) as used:
        assert used.threads == 1
        assert threads.blas_info(decided)["threads"] == 1
        a = np.ones((64, 64))
        assert float((a @ a)[0, 0]) == 64.0
    assert threads.blas_info()["threads"] == before


def test_blas_info_names_the_library():
    info = threads.blas_info(threads.ThreadPlan(2, "test", cores=2))
    assert info["library"] and info["version"]
    assert isinstance(info["threads"], int) and info["threads"] >= 1
    assert info["policy"]["threads"] == 2


def test_describe_is_one_line():
    line = threads.describe(threads.blas_info(threads.ThreadPlan(1, "1 usable core")))
    assert "\n" not in line and "1 thread(s)" in line and "1 usable core" in line
    left = threads.describe({"library": "openblas", "threads": 2, "policy": {"threads": None}})
    assert "left to the BLAS" in left and "kernels" not in left
    named = threads.describe({"library": "openblas", "architecture": "Haswell", "threads": 1})
    assert "(?, Haswell kernels)" in named


NO_USER_SETTING = {name: "" for name in (*threads.USER_VARS, threads.OWN_VAR)}


def test_nested_runs_keep_the_outer_decision(monkeypatch):
    for name, value in NO_USER_SETTING.items():
        monkeypatch.setenv(name, value)
    outer = threads.ThreadPlan(2, "2 usable cores, 1 local rank(s), 0 reader(s), 0 busy", 2)
    monkeypatch.setattr(threads, "plan", lambda *a, **k: pytest.fail("the machine read again"))
    with threads.blas_threads(decided=outer):
        with threads.blas_threads() as inner:
            assert inner is outer
        with threads.blas_threads(1) as reader:  # the read-ahead takes one of the two cores
            assert reader.threads == 1 and reader.readers == 1
            assert threads.blas_info(reader)["threads"] == 1
        assert threads.blas_info(outer)["threads"] == 2


def test_a_resumed_run_takes_the_recorded_count(monkeypatch):
    for name, value in NO_USER_SETTING.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(threads, "plan", lambda *a, **k: threads.ThreadPlan(2, "now", 2))
    with threads.blas_threads(resume={threads.RESUME_KEY: 1}) as chosen:
        assert chosen.threads == 1 and threads.blas_info(chosen)["threads"] == 1
    with threads.blas_threads(resume={}) as chosen:
        assert chosen.threads == 2
    # a user's own setting still wins over the record
    assert threads.recorded({threads.RESUME_KEY: 1}, env={"OPENBLAS_NUM_THREADS": "2"}) is None
    assert threads.recorded({threads.RESUME_KEY: 1}, env={threads.OWN_VAR: "2"}) is None


def test_training_records_its_count_in_checkpoints_and_resumes_on_it(monkeypatch):
    from deepnet.training import L_layer_model, TrainState, train  # noqa: PLC0415

    for name, value in NO_USER_SETTING.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(threads, "plan", lambda *a, **k: threads.ThreadPlan(1, "test", 2))
    rng = np.random.default_rng(0)
    X, Y = rng.random((50, 12)), (rng.random((1, 12)) < 0.5) * 1.0
    seen, during = [], []
    kw = dict(init="lecun", seed=1, learning_rate=0.05, batch_size=4, record_every=5)

    def note(state, cost):
        during.append(threads.blas_info(threads.ThreadPlan(1, "x"))["threads"])

    done = train(X, Y, [50, 3, 1], num_iterations=20, checkpoint_every=10, callback=note,
                 on_checkpoint=seen.append, **kw)  # fmt: skip
    assert [s.resume[threads.RESUME_KEY] for s in seen] == [1, 1]
    assert done.resume[threads.RESUME_KEY] == 1 and set(during) == {1}
    # resumed under another machine reading, the recorded count is used
    monkeypatch.setattr(threads, "plan", lambda *a, **k: threads.ThreadPlan(2, "test", 2))
    during.clear()
    more = train(
        X,
        Y,
        [50, 3, 1],
        num_iterations=30,
        start=TrainState(done.parameters, done.costs, done.iteration, resume=done.resume),
        callback=note,
        **kw,
    )
    assert more.resume[threads.RESUME_KEY] == 1 and set(during) == {1}
    params, _ = L_layer_model(X, Y, [50, 3, 1], num_iterations=2)
    assert params["W1"].shape == (3, 50)


def test_checkpoints_record_the_kernel_set_and_a_resume_under_another_warns(monkeypatch):
    from deepnet.training import TrainState, train  # noqa: PLC0415

    rng = np.random.default_rng(0)
    X, Y = rng.random((50, 12)), (rng.random((1, 12)) < 0.5) * 1.0
    kw = dict(init="lecun", seed=1, learning_rate=0.05, num_iterations=4)
    monkeypatch.setattr(threads, "kernel_set", lambda: "SkylakeX")
    done = train(X, Y, [50, 3, 1], **kw)
    assert done.resume[threads.KERNELS_KEY] == "SkylakeX"
    start = TrainState(done.parameters, done.costs, 2, resume=done.resume)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(X, Y, [50, 3, 1], start=start, **kw)  # the same set: silent
    monkeypatch.setattr(threads, "kernel_set", lambda: "Haswell")
    with pytest.warns(RuntimeWarning) as caught:
        again = train(X, Y, [50, 3, 1], start=start, **kw)
    assert len(caught) == 1  # once per run, though train nests blas_threads
    message = str(caught[0].message)
    assert "started under OpenBLAS's SkylakeX kernels and resumes under Haswell" in message
    assert "OPENBLAS_CORETYPE=SkylakeX" in message and "\n" not in message
    assert again.resume[threads.KERNELS_KEY] == "Haswell"


def test_a_kernel_record_that_is_not_a_plain_name_is_ignored(monkeypatch):
    monkeypatch.setattr(threads, "kernel_set", lambda: "Haswell")
    said: list[str] = []
    for bad in ("\x1b[2JSkylakeX", "a" * 40, 7, None, ""):
        threads.check_kernels({threads.KERNELS_KEY: bad}, said.append)
    assert said == []
    threads.check_kernels({threads.KERNELS_KEY: "Zen"}, said.append)
    assert len(said) == 1 and said[0].startswith("this run started under OpenBLAS's Zen")
    monkeypatch.setattr(threads, "kernel_set", lambda: None)  # a BLAS that names none
    threads.check_kernels({threads.KERNELS_KEY: "Zen"}, said.append)
    assert len(said) == 1


def test_kernel_set_names_numpys_openblas(monkeypatch):
    info = threads.blas_info(threads.ThreadPlan(1, "x"))
    if info["library"] != "openblas":
        pytest.skip(f"NumPy's BLAS here is {info['library']}, which names no kernel set")
    assert threads.kernel_set() == info["architecture"]
    threads.kernel_set.cache_clear()
    blis = {"library": "blis", "architecture": "zen3"}
    monkeypatch.setattr(threads, "blas_info", lambda *a: blis)
    assert threads.kernel_set() is None  # only OpenBLAS's sets are what OPENBLAS_CORETYPE picks
    monkeypatch.undo()
    threads.kernel_set.cache_clear()
    assert threads.kernel_set() == info["architecture"]


def test_deepnet_info_reports_the_blas_and_the_policy(capsys):
    from deepnet import cli  # noqa: PLC0415

    cli.main(["info"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BLAS: ")]
    assert len(lines) == 1 and "deepnet's policy" in lines[0]
