"""The ``deepnet`` command, run as a user runs it: in a subprocess, reading what it prints.

One tiny model (12288-8-4-1, 200 float32 iterations on the synthetic set, about two seconds)
is trained once for the module and then evaluated, used for predictions and for the gallery.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepnet import cli
from deepnet.backend import cuda_available
from deepnet.data import load_picture, preprocess
from deepnet.kernels import predict_proba
from deepnet.model_io import load_model, save_model
from deepnet.synthetic import make_split

TINY = ["--layers", "12288,8,4,1", "--iterations", "200", "--dtype", "float32"]


def deepnet(*args, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m deepnet.cli ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "deepnet.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, env) -> types.SimpleNamespace:
    """``deepnet train`` on the synthetic set, once: the model path and what it printed."""
    folder = tmp_path_factory.mktemp("run")
    result = deepnet("train", *TINY, "--out", folder / "model.npz", "--progress", env=env)
    assert result.returncode == 0, result.stderr
    return types.SimpleNamespace(folder=folder, model=folder / "model.npz", result=result)


def accuracies(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^(train|test) accuracy: (.+)$", stdout, re.MULTILINE))


def png_line(stdout: str, label: str) -> tuple[Path, tuple[int, int]]:
    """The path and size a line like ``label: PATH (WxH pixels)`` states."""
    match = re.search(rf"^{label}: (.+) \((\d+)x(\d+) pixels\)$", stdout, re.MULTILINE)
    assert match, stdout
    return Path(match[1]), (int(match[2]), int(match[3]))


def test_train_says_what_it_does_and_saves_model_and_cost_curve(trained):
    out, err = trained.result.stdout, trained.result.stderr
    assert out.startswith("data: synthetic cat/non-cat pictures")
    assert "model: L-layer 12288-8-4-1, init lecun, float32" in out
    assert re.search(r"^Cost after iteration 0: 0\.6\d+$", out, re.MULTILINE)
    assert re.search(r"^Cost after iteration 100: ", out, re.MULTILINE)
    assert "cost=" in err and "200/200" in err  # the progress bar, with the current cost
    assert list(accuracies(out)) == ["train", "test"]
    assert out.rstrip().splitlines()[-1].startswith("test accuracy: ")
    model = load_model(trained.model)
    assert model.layer_dims == [12288, 8, 4, 1] and model.dtype == "float32"
    assert model.training["synthetic"] is True and len(model.costs) == 2
    plot, size = png_line(out, "cost curve")
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == size


def test_evaluate_in_a_fresh_process_matches_training(trained, env):
    result = deepnet("evaluate", trained.model, env=env)
    assert result.returncode == 0, result.stderr
    assert accuracies(result.stdout) == accuracies(trained.result.stdout)
    assert "data: synthetic" in result.stdout
    rows = re.findall(r"^  (non-cat|cat) +(\d+) +(\d+)$", result.stdout, re.MULTILINE)
    counts = np.array([[int(a), int(b)] for _, a, b in rows]).reshape(2, 2, 2)  # split, true, pred
    assert counts[0].sum() == 209 and counts[1].sum() == 50
    assert counts[0, 1].sum() == 72 and counts[1, 1].sum() == 33  # cats per split
    test_right = int(re.search(r"^test accuracy: \S+ \((\d+)/50\)", result.stdout, re.M)[1])
    assert np.trace(counts[1]) == test_right


def test_predict_classifies_any_picture(trained, env, tmp_path: Path):
    images, labels = make_split("test")
    cat, other = images[np.flatnonzero(labels == 1)[0]], images[np.flatnonzero(labels == 0)[0]]
    Image.fromarray(cat).resize((300, 200)).save(tmp_path / "cat.jpg", quality=95)
    Image.fromarray(other).convert("RGBA").save(tmp_path / "thing.png")
    paths = [tmp_path / "cat.jpg", tmp_path / "thing.png"]
    result = deepnet("predict", trained.model, *paths, env=env)
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"^(.+): (cat|non-cat) \(P\(cat\) = ([0-9.]+)\)$", result.stdout, re.M)
    model = load_model(trained.model)
    expected = predict_proba(
        preprocess(np.stack([load_picture(p) for p in paths])), model.parameters
    )[0]
    assert [Path(name) for name, _, _ in lines] == paths
    for (_, label, shown), p in zip(lines, expected, strict=True):
        assert float(shown) == pytest.approx(p, abs=5e-5)
        assert label == ("cat" if p > 0.5 else "non-cat")


def test_predict_reports_each_bad_picture_and_goes_on(trained, env, tmp_path: Path):
    Image.fromarray(make_split("test")[0][0]).save(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("hello")
    result = deepnet("predict", trained.model, tmp_path / "notes.txt", tmp_path / "ok.png", env=env)
    assert result.returncode == 2  # an input error
    assert "ok.png: " in result.stdout
    assert result.stderr.strip().startswith("deepnet: error: ")
    assert "notes.txt: cannot read as a picture" in result.stderr


def test_mislabeled_gallery(trained, env):
    out = trained.folder / "wrong.png"
    result = deepnet("mislabeled", trained.model, "--out", out, "--columns", "4", env=env)
    assert result.returncode == 0, result.stderr
    wrong = int(re.search(r"^(\d+) of 50 test pictures mislabeled$", result.stdout, re.M)[1])
    test_right = int(re.search(r"\((\d+)/50\)", accuracies(trained.result.stdout)["test"])[1])
    assert wrong == 50 - test_right
    path, size = png_line(result.stdout, "gallery")
    assert path == out
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        assert size[0] == 4 * (128 + 12) + 12 if wrong >= 4 else size[0] >= 260


def test_info(env):
    result = deepnet("info", env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^deepnet \d+\.\d+", result.stdout)
    assert "numpy " in result.stdout and "h5py " in result.stdout
    assert "device: cpu" in result.stdout
    assert re.search(r"^gpu: ", result.stdout, re.M)


def test_module_and_console_script_entry_points(env):
    result = subprocess.run(
        [sys.executable, "-m", "deepnet", "--version"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("deepnet ")
    script = shutil.which("deepnet", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the deepnet console script is not installed next to this Python")
    result = subprocess.run([script, "--version"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("deepnet ")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("deepnet: error: "), result.stderr
    return lines[0]


def test_errors_print_one_line_and_exit_non_zero(trained, env, tmp_path: Path):
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(trained.model.read_bytes()[:2000])
    cases = [
        (["evaluate", truncated], "damaged/truncated"),
        (["evaluate", tmp_path / "missing.npz"], "model file not found"),
        (["train", "--data", tmp_path / "nowhere"], "does not exist"),
        (["train", "--layers", "100,5,1"], "must start with 12288"),
        (["train", "--model", "two-layer", "--layers", "12288,5,3,1"], "two-layer model takes"),
        (["train", "--synthetic", "-n", "2", "--learning-rate", "-1"], "learning_rate"),
        (["train", "--print-every", "50"], "multiple of --record-every"),
        (["train", "--out", tmp_path], "is a folder"),
    ]
    for args, expected in cases:
        assert expected in one_line_error(deepnet(*args, env=env, cwd=tmp_path)), args


def test_evaluate_asks_for_the_data_a_model_was_trained_on(trained, env, tmp_path: Path):
    model = load_model(trained.model)
    model.training["synthetic"] = False  # as if trained on the course data
    save_model(model, tmp_path / "real.npz")
    assert "set DEEPNET_DATA" in one_line_error(deepnet("evaluate", tmp_path / "real.npz", env=env))
    result = deepnet("evaluate", tmp_path / "real.npz", "--synthetic", env=env)
    assert result.returncode == 0 and "data: synthetic" in result.stdout


@pytest.mark.skipif(cuda_available(), reason="checks the error seen without a usable GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(env):
    for command in (["info"], ["train", "--synthetic", *TINY]):
        line = one_line_error(deepnet(*command, env=dict(env, DEEPNET_DEVICE="cuda")))
        assert "cuda" in line.lower()


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA GPU (none usable here)")
def test_model_trained_on_the_gpu_is_used_on_the_cpu(env, tmp_path: Path):
    model = tmp_path / "gpu.npz"
    result = deepnet("train", *TINY, "--device", "cuda", "--out", model, env=env)
    assert result.returncode == 0, result.stderr
    assert "device: cuda (" in result.stdout
    assert load_model(model).training["device"] == "cuda"
    result = deepnet("evaluate", model, "--device", "cpu", env=env)
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout and list(accuracies(result.stdout)) == ["train", "test"]


def test_train_with_no_arguments_is_the_course_l_layer_run_on_the_synthetic_set(
    monkeypatch, tmp_path: Path
):
    # Checked without the 2500 iterations (README measures them): defaults and data choice.
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = cli.build_parser().parse_args(["train"])
    settings = cli.train_settings(args)
    assert settings.model == "L-layer" and settings.layer_dims == [12288, 20, 7, 5, 1]
    assert (settings.init, settings.seed, settings.dtype) == ("lecun", 1, "float64")
    assert (settings.learning_rate, settings.num_iterations) == (0.0075, 2500)
    assert settings.batch_size is None and args.out == str(Path("runs") / "model.npz")
    data = cli.load_cat_data(args.data, synthetic=args.synthetic)
    assert data.synthetic


def test_bench_hands_the_rest_of_the_line_to_deepnet_bench(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("deepnet.bench")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "deepnet.bench", fake)
    assert cli.main(["bench", "--device", "cpu", "--quick"]) == 7
    assert seen == [["--device", "cpu", "--quick"]]
    monkeypatch.setitem(sys.modules, "deepnet.bench", None)  # as if the module were absent
    assert cli.main(["bench"]) == 1
    assert "not available" in capsys.readouterr().err
