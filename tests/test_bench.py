"""deepnet bench: the table it prints, on tiny sizes, and the peers it compares against."""

from __future__ import annotations

import numpy as np
import pytest

from deepnet.bench import COLUMNS, main, synthetic_data
from deepnet.bench.peers import TorchStep, course_step
from deepnet.initialization import draw_parameters
from deepnet.training import like, train_step

TINY = ["--layers", "64,5,3,1", "--sizes", "8,16", "--repeats", "2", "--warmup", "1"]


def table_rows(text: str) -> list[dict[str, str]]:
    lines = text.strip().splitlines()
    assert lines[0].startswith("deepnet bench: one training step of (64, 5, 3, 1)")
    assert lines[1].split() == list(COLUMNS)
    assert lines[-1].startswith("BLAS: ") and "deepnet's policy" in lines[-1]
    return [dict(zip(COLUMNS, line.split(), strict=True)) for line in lines[2:-4]]


def rate(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_bench_table_has_a_row_per_dtype_and_size_with_consistent_ratios(capsys):
    assert main([*TINY, "--devices", "cpu", "--peers", "course"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r["device"], r["dtype"], r["batch"]) for r in rows] == [
        ("cpu", "float64", "8"), ("cpu", "float64", "16"),
        ("cpu", "float32", "8"), ("cpu", "float32", "16"),
    ]  # fmt: skip
    for r in rows:
        assert rate(r["deepnet"]) > 0 and rate(r["gram"]) > 0
        assert r["torch"] == "-" and r["/torch"] == "-"  # not asked for
        if r["dtype"] == "float32":
            assert r["course"] == "-" and r["/course"] == "-"  # the course is float64 only
            continue
        # deepnet's time over the course's == the course's rate over deepnet's
        expected = rate(r["course"]) / rate(r["deepnet"])
        assert float(r["/course"].rstrip("x")) == pytest.approx(expected, rel=0.02, abs=0.01)


def test_bench_torch_column(capsys):
    assert main([*TINY, "--sizes", "8", "--dtypes", "float32", "--peers", "torch"]) == 0
    (row,) = table_rows(capsys.readouterr().out)
    try:
        import torch  # noqa: F401
    except ImportError:
        assert row["torch"] == "not-installed" and row["/torch"] == "-"
    else:
        expected = rate(row["torch"]) / rate(row["deepnet"])
        assert float(row["/torch"].rstrip("x")) == pytest.approx(expected, rel=0.02, abs=0.01)


@pytest.mark.parametrize(
    "argv",
    [["--sizes", "0"], ["--sizes", "a,b"], ["--dtypes", "float16"], ["--layers", "5"],
     ["--repeats", "0"], ["--peers", "keras"]],
)  # fmt: skip
def test_bench_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "deepnet bench" in capsys.readouterr().err


def test_course_baseline_computes_deepnets_step():
    X, Y = synthetic_data(64, 12)
    host = draw_parameters([64, 5, 3, 1], "lecun", 1)
    theirs, their_cost = course_step(host, X, Y, 0.05)
    ours, our_cost = train_step(like(host, X), X, Y, 0.05)
    assert float(our_cost) == pytest.approx(float(their_cost), rel=1e-12)
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_torch_peer_computes_deepnets_step():
    torch = pytest.importorskip("torch")
    X, Y = synthetic_data(64, 12)
    host = draw_parameters([64, 5, 3, 1], "lecun", 1)
    step = TorchStep(host, X, Y, 0.05, dtype="float64")
    cost = step()
    ours, our_cost = train_step(like(host, X), X, Y, 0.05)
    assert float(cost) == pytest.approx(float(our_cost), rel=1e-12)
    W1 = step.model[0].weight.detach()
    np.testing.assert_allclose(W1.numpy(), ours["W1"], rtol=1e-12, atol=1e-15)
    assert isinstance(W1, torch.Tensor)
