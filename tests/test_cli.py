"""The CLI contract: commands, outputs, and one-line errors with exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import one_line_error, run_cli
from genlab.registry import UsageError


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("gan", "dcgan", "nonsaturating", "minimax", "mnist-5k", "mnist", "folder", "npz"):
        assert f"  {name} " in out


def test_train_then_sample_png_and_npz(capsys, tiny_npz, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "dcgan", "--preset", "tiny", "--data", "npz",
                             "--data-dir", str(tiny_npz), "--max-steps", "2", "--out", str(run),
                             "--threads", "1")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(run)          # the run folder is printed last
    assert (run / "ckpt-00000002" / "MANIFEST.json").is_file()
    assert (run / "latest").read_text().strip() == "ckpt-00000002"
    code, _, err = run_cli(capsys, "sample", str(run), "--n", "12", "--seed", "0", "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 0
    code, _, err = run_cli(capsys, "sample", str(run), "--n", "7", "--seed", "1", "--out", str(tmp_path / "s.npz"))
    assert code == 0
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (7, 1, 28, 28)
        assert "labels" not in f.files                        # unconditional model
    # same seed, same samples
    run_cli(capsys, "sample", str(run), "--n", "7", "--seed", "1", "--out", str(tmp_path / "t.npz"))
    assert np.array_equal(np.load(tmp_path / "s.npz")["images"], np.load(tmp_path / "t.npz")["images"])


def test_config_file_and_resume_rules(capsys, tiny_npz, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "npz"\ndata_dir = "{tiny_npz}"\nz_dim = 6\nbatch_size = 8\nngf = 4\nndf = 4\n')
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "dcgan", "--config", str(cfg), "--max-steps", "2",
                           "--out", str(run), "--threads", "1")
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_config"]["z_dim"] == 6 and saved["train"]["max_steps"] == 2
    # a run already there is refused without --resume/--overwrite
    one_line_error(capsys, "train", "dcgan", "--config", str(cfg), "--out", str(run),
                       match="already holds a run")
    # resume: repeating the saved config is fine, changing the budget is fine, changing the model is not
    one_line_error(capsys, "train", "dcgan", "--resume", "--out", str(run), "--z-dim", "7",
                       match="differs from the saved run")
    code, _, err = run_cli(capsys, "train", "dcgan", "--resume", "--out", str(run), "--z-dim", "6",
                           "--max-steps", "3", "--threads", "1")
    assert code == 0, err
    assert (run / "latest").read_text().strip() == "ckpt-00000003"
    code, _, err = run_cli(capsys, "train", "dcgan", "--config", str(cfg), "--out", str(run),
                           "--overwrite", "--max-steps", "1", "--threads", "1")
    assert code == 0 and (run / "latest").read_text().strip() == "ckpt-00000001"
    assert not (run / "ckpt-00000003").exists()


def test_unknown_config_key_names_the_closest(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"z_dimm": 3}))
    one_line_error(capsys, "train", "dcgan", "--config", str(cfg), "--out", str(tmp_path / "r"),
                       match="unknown option 'z_dimm' in")


def test_console_script_exit_code(tmp_path):
    """The installed entry point: a real process, exit code 2, one line on stderr."""
    p = subprocess.run([sys.executable, "-m", "genlab.cli", "train", "dcgan", "--lr-g", "-1",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip() == "genlab: error: --lr-g must be >= 0, got -1.0"


@pytest.mark.parametrize("argv", [["dcgan", "--help"], ["--help", "vae"], ["--out", "x", "-h"]])
def test_train_help_lists_the_models_own_options(argv):
    """`genlab train MODEL --help` (the hint `genlab --help` gives) shows MODEL's options, not only the
    run options; without a model it shows the run options."""
    p = subprocess.run([sys.executable, "-m", "genlab.cli", "train", *argv], capture_output=True, text=True)
    model = next((a for a in argv if a in ("dcgan", "vae")), None)
    assert p.returncode == 0 and "run options:" in p.stdout, p.stderr
    if model == "dcgan":
        assert "dcgan options:" in p.stdout and "--z-dim INT" in p.stdout and "--ngf INT" in p.stdout
    elif model == "vae":
        assert "vae options:" in p.stdout and "--beta" in p.stdout
    else:
        assert " options:\n" not in p.stdout.replace("run options:", "")


def test_saved_config_with_an_unknown_option_is_a_usage_error():
    """A run written by a genlab that had an option this one lacks: one line, not a KeyError."""
    from genlab.config import build
    from genlab.models import MODELS
    with pytest.raises(UsageError, match="unknown RNNGANConfig option 'mbstd'"):
        build(MODELS["rnngan"], {"mbstd": True})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained tiny MLP GAN run (2 steps) that the `sample` cases below read."""
    import genlab
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    np.savez(d / "d.npz", images=rng.integers(0, 256, (16, 1, 28, 28), dtype=np.uint8))
    return genlab.train("gan", preset="tiny", data="npz", data_dir=str(d / "d.npz"), out=str(d / "run"),
                        max_steps=2, sample_every=0, quiet=True, threads=1)


@pytest.mark.parametrize("n, match", [(-1, ">= 1"), (0, ">= 1"), (2.5, "whole number"), (True, "whole number"),
                                      ("3", "whole number"), (10 ** 9, "draw them in batches")])
def test_api_sample_refuses_bad_counts(tiny_run, n, match):
    import genlab
    with pytest.raises(UsageError, match=match):
        genlab.load(tiny_run).sample(n)


def test_version_and_options_before_the_model(capsys, tmp_path, tiny_npz):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("genlab ")
    code, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", "--max-steps", "1", "--data", "npz",
                             "--data-dir", tiny_npz, "--preset", "tiny", "--threads", "1", "gan")
    assert code == 0 and out.strip().endswith(str(tmp_path / "r")), err


def test_relative_data_dir_resumes_from_another_directory(tmp_path, tiny_npz, monkeypatch):
    import genlab
    monkeypatch.chdir(tiny_npz.parent)
    run = genlab.train("gan", preset="tiny", data="npz", data_dir=tiny_npz.name, out=str(tmp_path / "r"),
                       max_steps=1, sample_every=0, quiet=True, threads=1)
    monkeypatch.chdir(tmp_path)
    genlab.train(resume=True, out=str(run), max_steps=2, quiet=True)
    assert genlab.load(run).step == 2


def test_api_train_quiet_prints_nothing(tmp_path, tiny_npz, capfd):
    """genlab.train(quiet=True) (benchmarks, scripts, notebooks) writes its metrics to the run folder
    only: no progress lines on stderr, no summary on stdout; without quiet, the step lines show."""
    import genlab
    kw = dict(preset="tiny", data="npz", data_dir=str(tiny_npz), max_steps=4, log_every=2, sample_every=0,
              threads=1)
    run = genlab.train("gan", out=str(tmp_path / "q"), quiet=True, **kw)
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    genlab.train("gan", out=str(tmp_path / "v"), **kw)
    out, err = capfd.readouterr()
    assert "step=2 " in err and "step=4 " in err and "trained gan to step 4" in out
