"""Every registered model, at its tiny preset: trains, samples the right shapes and ranges, saves and
loads identically, and resumes bit-exactly. A new model is covered by registering it."""
import json

import pytest
import torch
from safetensors.torch import load_file

import genlab
from genlab.losses import LOSSES
from genlab.models import MODELS
from genlab.config import build
from genlab.models.gan import GANConfig, d_real_fake
from genlab.sample import draw

from conftest import TINY


def final_tensors(run):
    latest = (run / "latest").read_text().strip()
    return load_file(run / latest / "model.safetensors")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_model_trains_samples_and_reloads(name, tiny_npz, tmp_path):
    run = genlab.train(name, preset="tiny", data_dir=str(tiny_npz), out=str(tmp_path / name),
                       max_steps=4, **TINY)
    assert (run / "samples.png").is_file() and (run / "losses.png").is_file()
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    model = genlab.load(run)
    assert model.step == 4
    x = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    again = genlab.load(run).sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)                      # saved and loaded identically
    other = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(x, other)                  # the generator is really used


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resume_is_bit_exact(name, tiny_npz, tmp_path):
    """0 -> 6 in one go equals 0 -> 3, stop, resume 3 -> 6 (with sampling and checkpoints in between)."""
    common = dict(TINY, data_dir=str(tiny_npz))
    one = genlab.train(name, preset="tiny", out=str(tmp_path / "one"), max_steps=6, **common)
    two = genlab.train(name, preset="tiny", out=str(tmp_path / "two"), max_steps=3,
                       **{**common, "sample_every": 1})
    assert (two / "ckpt-00000003").is_dir()
    genlab.train(name, resume=True, out=str(two), max_steps=6, quiet=True)
    a, b = final_tensors(one), final_tensors(two)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = lambda r: [json.loads(l) for l in (r / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows(two)] == [1, 2, 3, 4, 5, 6]
    no_time = lambda r: {k: v for k, v in r.items() if k != "img_s"}
    assert [no_time(x) for x in rows(one)] == [no_time(x) for x in rows(two)]  # identical curves


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_dcgan(loss, tiny_npz, tmp_path):
    run = genlab.train("dcgan", preset="tiny", loss=loss, data_dir=str(tiny_npz),
                       out=str(tmp_path / loss), max_steps=3, **{**TINY, "log_every": 3})
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 3 and row["skipped"] == 0 and {"d_loss", "g_loss"} <= set(row)  # no step undone
    if loss == "wgan-gp":
        assert genlab.load(run).config.n_critic == 5      # Gulrajani et al.'s critic steps


def test_sn_and_ema_options(tiny_npz, tmp_path):
    run = genlab.train("dcgan", preset="tiny", sn=True, ema=0.9, data_dir=str(tiny_npz),
                       out=str(tmp_path / "sn"), max_steps=3, **TINY)
    model = genlab.load(run)
    keys = model.state_dict().keys()
    assert any("parametrizations" in k for k in keys) and any(k.startswith("G_ema.") for k in keys)
    # sampling uses the EMA generator: different weights from G after a few steps
    assert not torch.equal(model.G_ema.project[0].weight, model.G.project[0].weight)


def test_same_seed_same_samples(tiny_npz, tmp_path):
    runs = [genlab.train("gan", preset="tiny", data_dir=str(tiny_npz), out=str(tmp_path / f"r{i}"),
                         max_steps=3, **TINY) for i in range(2)]
    x = [draw(genlab.load(r), 8, seed=5)[0] for r in runs]
    assert torch.equal(x[0], x[1])


def test_eval_every_logs_health_without_changing_training(mnist_dir, tmp_path):
    common = dict(TINY, data="mnist-5k", data_dir=str(mnist_dir), max_steps=4)
    plain = genlab.train("gan", preset="tiny", out=str(tmp_path / "a"), **common)
    scored = genlab.train("gan", preset="tiny", out=str(tmp_path / "b"), eval_every=2, **common)
    rows = [json.loads(l) for l in (scored / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "fd" in r] == [2, 4]
    assert all(r["fd"] > 0 and 0 <= r["coverage"] <= 1 for r in rows if "fd" in r)
    a, b = final_tensors(plain), final_tensors(scored)
    assert all(torch.equal(a[k], b[k]) for k in a)


def joint_vs_two_calls(net, x, x_fake, y):
    """D's logits and its loss's weight gradients by the joint call and by two calls."""
    out = {}
    for joint in (True, False):
        net.D.zero_grad(set_to_none=True)
        real, fake = d_real_fake(net.D, x, x_fake, y, joint)
        net.loss.d(real, fake).backward()
        out[joint] = (real.detach(), fake.detach(), [p.grad.clone() for p in net.D.parameters()])
    return out[True], out[False]


@pytest.mark.parametrize("name", sorted(n for n in MODELS if issubclass(MODELS[n], GANConfig)))
def test_a_joint_real_fake_call_is_the_same_function_of_d(name):
    """GAN.joint_d: a D that sees the real and the fake batch in one call must give the logits and
    gradients of two calls; Ds that mix a batch (BatchNorm, minibatch std) must not declare it. The
    negative control: the same comparison for the DCGAN's D with BatchNorm finds them different."""
    torch.manual_seed(0)
    nets = {name: build(MODELS[name], {}).build((1, 28, 28), 10)}
    if name == "dcgan":
        nets["dcgan --d-norm"] = build(MODELS[name], {"d_norm": True}).build((1, 28, 28), 10)
    for label, net in nets.items():
        x, x_fake = torch.rand(8, 1, 28, 28) * 2 - 1, torch.rand(8, 1, 28, 28) * 2 - 1
        y = torch.arange(8) % 10
        joint, two = joint_vs_two_calls(net.train(), x, x_fake, y)
        same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-6)
                   for a, b in zip([*joint[:2], *joint[2]], [*two[:2], *two[2]]))
        if net.joint_d:
            assert same, f"{label}: a joint call changes D"
        if label == "dcgan --d-norm":  # BatchNorm over 2B images: a different D(x)
            assert not same and not net.joint_d
    assert nets[name].joint_d == (name == "gan")  # the MLP D alone calls jointly (gan.py measured why)


def test_dcgan_beta1_follows_the_loss_and_the_run_saves_the_value_used(tiny_npz, tmp_path):
    """beta1 0 was screened with the hinge loss only (dcgan.py); lsgan collapsed there, so the other
    losses keep the paper's 0.5. A value given on the command line wins; config.json holds the value."""
    assert build(MODELS["dcgan"], {}).beta1 == 0.0
    assert build(MODELS["dcgan"], {"loss": "lsgan"}).beta1 == 0.5
    assert build(MODELS["dcgan"], {"loss": "lsgan", "beta1": 0.2}).beta1 == 0.2
    run = genlab.train("dcgan", preset="tiny", data_dir=str(tiny_npz), out=str(tmp_path / "r"),
                       max_steps=1, loss="lsgan", **TINY)
    assert json.loads((run / "config.json").read_text())["model_config"]["beta1"] == 0.5
