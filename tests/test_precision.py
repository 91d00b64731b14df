"""precision.py decides device and precision once; `auto` follows the hardware, runs record the choice,
loading restores it, and every model trains where oneDNN lacks bf16 kernels (AVX2 emulated here)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import genlab
from genlab import precision
from genlab.registry import UsageError

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def run_py(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


def test_explicit_precisions_are_obeyed_and_bad_names_refused():
    assert precision.resolve("fp32").dtype is None
    assert precision.resolve("fp32").reason == "fp32: asked for"
    with pytest.warns(UserWarning) if not precision.cpu_bf16()[0] else _nothing():
        assert precision.resolve("bf16").dtype is torch.bfloat16
    with pytest.raises(UsageError, match="--precision must be one of"):
        precision.resolve("fp16")
    with pytest.raises(UsageError, match="--device must be one of"):
        precision.resolve_device("tpu")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="no CUDA GPU"):
        precision.resolve("auto", "cuda")
    assert precision.resolve("auto", "auto").device == "cpu"


def test_auto_matches_the_hardware():
    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    choice = precision.resolve("auto")
    if not native:
        assert choice.precision == "fp32" and "no native bf16" in choice.reason
    else:  # native bf16: chosen unless the probe measured it no faster than fp32
        assert (choice.precision == "bf16") == ("measured only" not in choice.reason)


def test_avx2_emulation_is_real_and_auto_picks_fp32_there():
    """Under ONEDNN_MAX_CPU_ISA=AVX2 an AMX/AVX512-BF16 host behaves like an AVX2 one: no native bf16,
    bf16 matmuls far slower than fp32, no bf16 LSTM; `auto` picks fp32 and says why."""
    r = run_py("import json, torch; from genlab import precision\n"
               "torch.set_num_threads(1)\n"
               "c = precision.resolve('auto')\n"
               "print(json.dumps({'c': c.to_dict(), 'lstm': precision.bf16_lstm(),"
               " 'speedup': precision._bf16_speedup(128)}))", AVX2)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["c"]["precision"] == "fp32" and "no native bf16" in out["c"]["reason"]
    assert out["lstm"] is False
    assert out["speedup"] < 0.2, out  # emulated bf16 is slower, not faster: measured ~50-150x


def test_every_model_trains_in_bf16_without_native_kernels(tmp_path):
    """An explicit --precision bf16 on an AVX2 CPU trains every model (rnngan's LSTM falls back to
    fp32) and records the choice; the run notes the emulation."""
    code = ("import json, genlab, numpy as np, warnings\n"
            "warnings.simplefilter('ignore')\n"
            f"np.savez(r'{tmp_path}/d.npz', images=np.random.RandomState(0).randint(0, 256, (32, 1, 28, 28),"
            " dtype=np.uint8), labels=np.arange(32) % 10)\n"
            "out = {}\n"
            "for m in genlab.list_models():\n"
            f"    run = genlab.train(m, preset='tiny', data='npz', data_dir=r'{tmp_path}/d.npz',"
            f" out=r'{tmp_path}/' + m, max_steps=2, precision='bf16', sample_every=0, quiet=True)\n"
            "    out[m] = json.loads((run / 'config.json').read_text())['resolved']\n"
            "print(json.dumps(out))")
    r = run_py(code, AVX2)
    assert r.returncode == 0, r.stderr[-2000:]
    resolved = json.loads(r.stdout.splitlines()[-1])
    assert set(resolved) == set(genlab.list_models())
    for m, c in resolved.items():
        assert c["precision"] == "bf16" and "LSTM layers in fp32" in c["reason"], (m, c)


def test_load_restores_the_runs_precision(tiny_npz, tmp_path):
    for p, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        run = genlab.train("dcgan", preset="tiny", data="npz", data_dir=str(tiny_npz),
                           out=str(tmp_path / p), max_steps=2, precision=p, sample_every=0, quiet=True)
        saved = json.loads((run / "config.json").read_text())
        assert saved["train"]["precision"] == p and saved["resolved"]["precision"] == p
        model = genlab.load(run)
        assert model.autocast_dtype is dtype
        g = torch.Generator().manual_seed(0)
        x = model.sample(4, generator=g)
        assert x.dtype == torch.float32 and x.shape == (4, 1, 28, 28)


def test_info_command_reports_machine_and_choice():
    r = subprocess.run([sys.executable, "-m", "genlab.cli", "info", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["torch"] == torch.__version__ and d["isa"] == torch.backends.cpu.get_cpu_capability()
    assert d["auto_precision"] == precision.resolve("auto").precision, d["auto_reason"]
    assert d["gemm_fp32_gflops"] > 0 and d["gemm_bf16_gflops"] > 0 and d["cores"] == os.cpu_count()


def fake_step(seconds: dict):
    """step(dtype) that takes seconds[dtype] (None = fp32): a model whose speed we choose."""
    import time

    def step(dtype):
        time.sleep(seconds[dtype])
    return step


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(0.02, 0.005, "bf16"), (0.005, 0.02, "fp32")])
def test_auto_keeps_bf16_only_where_the_models_own_step_is_faster(fp32_s, bf16_s, chosen, monkeypatch,
                                                                  tmp_path):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    cpu = precision.Choice("cpu", "bf16", "bf16: native on this CPU (test)")
    c = precision.confirm(cpu, "auto", fake_step({None: fp32_s, torch.bfloat16: bf16_s}), "model A")
    assert c.precision == chosen and (c.step_speedup > 2) == (chosen == "bf16")  # 4x either way, slept
    assert "this model's training step" in c.reason and ("ran only" in c.reason) == (chosen == "fp32")
    # asked-for precisions, fp32 choices and measured choices are not re-measured
    never = fake_step({})  # KeyError if called
    assert precision.confirm(cpu, "bf16", never) is cpu
    assert precision.confirm(c, "auto", never) is c
    fp32 = precision.Choice("cpu", "fp32", "fp32: no native bf16")
    assert precision.confirm(fp32, "auto", never) is fp32
    # the same model again on this machine: the cached measurement, not a new one (same command,
    # same precision); another model is measured; a corrupt cache file is measured anew
    again = precision.confirm(cpu, "auto", never, "model A")
    assert (again.precision, again.step_speedup) == (c.precision, c.step_speedup)
    assert "measured earlier on this machine" in again.reason
    with pytest.raises(KeyError):
        precision.confirm(cpu, "auto", never, "model B")
    (tmp_path / "precision.json").write_text("{not json")
    assert precision.confirm(cpu, "auto", fake_step({None: fp32_s, torch.bfloat16: bf16_s}),
                             "model A").precision == chosen


def test_a_measured_choice_is_kept_on_resume_and_load(monkeypatch, tiny_npz, tmp_path):
    """The run records the model's measured choice; resume and load keep it where bf16 is native, and
    fall back to fp32 where it is not."""
    monkeypatch.setattr(precision, "cpu_bf16", lambda: (True, "bf16: native (test)"))
    measured = {"device": "cpu", "precision": "fp32", "reason": "fp32: measured (test)", "step_speedup": 0.8}
    assert precision.resolve("auto", "cpu", measured) == precision.Choice(**measured)
    assert precision.resolve("auto", "cpu", {**measured, "step_speedup": None}).precision == "bf16"
    assert precision.resolve("bf16", "cpu", measured).precision == "bf16"  # asked for: obeyed
    monkeypatch.setattr(precision, "cpu_bf16", lambda: (False, "fp32: no native bf16 (test)"))
    assert precision.resolve("auto", "cpu", {**measured, "precision": "bf16"}).precision == "fp32"
    monkeypatch.undo()
    run = genlab.train("gan", preset="tiny", data="npz", data_dir=str(tiny_npz), out=str(tmp_path / "r"),
                       max_steps=2, sample_every=0, quiet=True)
    first = json.loads((run / "config.json").read_text())["resolved"]
    native = precision.cpu_bf16()[0]
    assert (first["step_speedup"] is not None) == native  # measured only where bf16 could be chosen
    genlab.train(out=str(run), resume=True, max_steps=4, quiet=True)
    state = json.loads((genlab.load(run).checkpoint / "state.json").read_text())
    assert state["step"] == 4 and state["precision"] == first  # kept, not measured again
    assert genlab.load(run).autocast_dtype is (torch.bfloat16 if first["precision"] == "bf16" else None)
