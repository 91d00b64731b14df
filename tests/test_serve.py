"""genlab serve: the API on a tiny run of every family (what it returns, checked against the model
itself), GANSpace against its closed form, hostile requests, and a burst against a real server."""
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from conftest import TINY, make_tiny_npz, one_line_error
from genlab.data import to_uint8
from genlab.serve import space
from genlab.serve.app import create_app

FAMILIES = ("gan", "dcgan", "cgan", "rnngan", "vae")
BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """$GENLAB_CACHE in a tmp folder (the VAE's latent map is cached there), for servers started too."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield Path(os.environ["GENLAB_CACHE"])
    mp.undo()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A 2-step tiny run of every family, on 64 labelled images made here (as conftest's tiny_npz)."""
    d = tmp_path_factory.mktemp("runs")
    make_tiny_npz(d / "tiny.npz")
    torch.set_num_threads(1)
    return {m: Path(genlab.train(m, preset="tiny", max_steps=2, **TINY, data_dir=str(d / "tiny.npz"), out=str(d / m)))
            for m in FAMILIES}


@pytest.fixture(scope="module")
def clients(runs) -> dict:
    return {m: TestClient(create_app(r, map_size=64), base_url=BASE) for m, r in runs.items()}


def png(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.array(Image.open(io.BytesIO(r.content)))


def z_of(seed: int, n: int, z_dim: int) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FAMILIES)
def test_info_and_sample(clients, runs, name):
    c, model = clients[name], genlab.load(runs[name])
    info = c.get("/api/info").json()
    assert info == {**info, "model": name, "z_dim": model.z_dim, "shape": [1, 28, 28], "step": 2,
                    "num_classes": model.num_classes, "conditional": model.num_classes > 0,
                    "autoencoder": name == "vae"}
    one = png(c.post("/api/sample", json={"seed": 5, "n": 1}))
    assert one.shape == (28, 28)                               # one image: no grid border
    want = to_uint8(model.generate(z_of(5, 1, model.z_dim)))[0, 0].numpy()
    assert np.array_equal(one, want)                           # the model's own image at that seed's z
    grid = c.post("/api/sample", json={"seed": 5, "n": 6})
    assert png(grid).shape == (2 * 30 + 2, 3 * 30 + 2)         # 3 per row, 2 px padding (make_grid)
    assert c.post("/api/sample", json={"seed": 5, "n": 6}).content == grid.content
    z = z_of(9, 2, model.z_dim)
    given = png(c.post("/api/sample", json={"z": z.tolist()}))
    assert np.array_equal(given[2:30, 2:30], to_uint8(model.generate(z))[0, 0].numpy())


def test_different_seeds_differ(clients):
    for name in ("gan", "rnngan", "vae"):  # (2-step tiny dcgan/cgan draw near-constant images)
        a, b = (clients[name].post("/api/sample", json={"seed": s, "n": 4}).content for s in (1, 2))
        assert a != b, name


def test_class_picker(clients, runs):
    model = genlab.load(runs["rnngan"])
    got = png(clients["rnngan"].post("/api/sample", json={"seed": 1, "n": 1, "labels": [7]}))
    y7 = to_uint8(model.generate(z_of(1, 1, model.z_dim), torch.tensor([7])))[0, 0].numpy()
    y2 = to_uint8(model.generate(z_of(1, 1, model.z_dim), torch.tensor([2])))[0, 0].numpy()
    assert np.array_equal(got, y7) and not np.array_equal(got, y2)
    for bad in ([10], [-1], [1, 2]):                          # out of range; neither 1 nor n labels
        r = clients["cgan"].post("/api/sample", json={"n": 3, "labels": bad})
        assert r.status_code == 422 and "labels" in r.text
    r = clients["gan"].post("/api/sample", json={"labels": [1]})
    assert r.status_code == 422 and "unconditional" in r.text


def test_directions_are_gansspace_closed_form(runs):
    """G's first layer linear (h = W z): PCA of h over z ~ N(0, I) has W's left singular vectors as
    components, and regressing z on the PCA coordinates gives W's right singular vectors."""
    model = genlab.load(runs["gan"])
    G = model.G_ema if model.config.ema else model.G                            # what generate() runs
    first = G.net[0]                                                            # Linear(z_dim 8, 16)
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(16, 8, generator=g))
    V, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    s = torch.tensor([8.0, 6, 4, 3, 2, 1, 0.5, 0.2])
    with torch.no_grad():
        first.weight.copy_(U @ torch.diag(s) @ V.T)
    d = space.directions(model, k=4, n=4000, generator=torch.Generator().manual_seed(1))
    assert d["u"].shape == (4, 8)
    cos = (d["u"] @ V[:, :4]).diag().abs()
    assert (cos > 0.99).all(), cos
    var = s ** 2 / (s ** 2).sum()
    assert np.allclose(d["explained"], var[:4], atol=0.03)


def test_directions_and_shift(clients):
    c = clients["gan"]
    d = c.get("/api/directions").json()
    u = torch.tensor(d["u"])
    assert u.shape == (8, 8) and torch.allclose(u.norm(dim=1), torch.ones(8), atol=1e-5)
    assert d["explained"] == sorted(d["explained"], reverse=True)
    base = c.post("/api/sample", json={"seed": 3, "n": 4}).content
    moved = c.post("/api/sample", json={"seed": 3, "n": 4, "shift": [2.0]}).content
    assert moved != base
    assert c.post("/api/sample", json={"seed": 3, "n": 4, "shift": [0.0]}).content == base
    shifted = (z_of(3, 1, 8) + 2.0 * u[0]).tolist()
    assert png(c.post("/api/sample", json={"seed": 3, "n": 1, "shift": [2.0]})).tolist() == \
        png(c.post("/api/sample", json={"z": shifted})).tolist()


def test_interpolate(clients):
    c = clients["gan"]
    a = png(c.post("/api/sample", json={"seed": 4, "n": 1}))
    b = png(c.post("/api/sample", json={"seed": 6, "n": 1}))
    for t, want in ((0, a), (1, b)):       # slerp's ends are the two samples
        got = png(c.post("/api/interpolate", json={"seed_a": 4, "seed_b": 6, "t": t, "scale": 1}))
        assert np.abs(got.astype(int) - want).max() <= 1
    strip = png(c.post("/api/interpolate", json={"seed_a": 4, "seed_b": 6, "steps": 5, "scale": 1}))
    assert strip.shape == (32, 5 * 30 + 2)
    r = c.post("/api/interpolate", json={"seed_a": 4, "seed_b": 6, "steps": 5, "format": "gif"})
    assert r.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(r.content))
    assert gif.n_frames == 8 and gif.size == (112, 112)         # 5 there, 3 back; 4x
    assert c.post("/api/interpolate", json={"steps": 65}).status_code == 422


def test_vae_canvas_and_map(clients, runs, cache):
    c = clients["vae"]
    m = c.get("/api/latent-map").json()
    assert len(m["points"]) == len(m["labels"]) == 64 and set(m["labels"]) == set(range(10))
    cached = list((cache / "serve").glob("map2-*-64.npz"))
    assert len(cached) == 1                                     # computed once per checkpoint, kept
    again = TestClient(create_app(runs["vae"], map_size=64), base_url=BASE).get("/api/latent-map").json()
    assert again == m and list((cache / "serve").glob("map2-*")) == cached
    digit = np.zeros((28, 28), int)
    digit[6:22, 12:16] = 255                                    # a drawn "1"
    r = c.post("/api/reconstruct", json={"pixels": digit.ravel().tolist()}).json()
    model = genlab.load(runs["vae"])
    x = torch.tensor(digit, dtype=torch.float32).view(1, 1, 28, 28) / 127.5 - 1
    assert np.allclose(r["mu"], model.encode(x)[0][0].tolist(), atol=1e-5)
    assert len(r["point"]) == 2 and r["png"].startswith("data:image/png;base64,")
    for bad in ([0] * 783, [256] * 784):
        assert c.post("/api/reconstruct", json={"pixels": bad}).status_code == 422
    r = clients["dcgan"].post("/api/reconstruct", json={"pixels": [0] * 784})
    assert r.status_code == 422 and "not an autoencoder" in r.text


def test_latent_map_shows_the_runs_classes(tmp_path):
    """A run trained on some classes maps those classes (the data it learned), not the whole source."""
    make_tiny_npz(tmp_path / "tiny.npz")
    run = genlab.train("vae", preset="tiny", max_steps=2, **TINY, data_dir=str(tmp_path / "tiny.npz"),
                       out=str(tmp_path / "r"), classes=[1, 7])
    m = TestClient(create_app(run, map_size=64), base_url=BASE).get("/api/latent-map").json()
    assert len(m["labels"]) > 0 and set(m["labels"]) == {1, 7}


def test_training_view(clients, runs):
    m = clients["vae"].get("/api/metrics?rows=1").json()
    assert m["loss_stats"] and [r["step"] for r in m["rows"]] == [2]
    steps = [json.loads(line)["step"] for line in (runs["vae"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in clients["vae"].get("/api/metrics").json()["rows"]] == steps
    assert clients["vae"].get("/api/metrics?rows=0").status_code == 422
    assert m["training"] is False                              # samples.png is written after the last log
    assert png(clients["vae"].get("/api/training-samples")).shape[0] > 28


def test_training_state(runs, tmp_path):
    import shutil
    run = shutil.copytree(runs["vae"], tmp_path / "run")
    c = TestClient(create_app(run, map_size=16), base_url=BASE)
    assert c.get("/api/info").json()["training"] is False
    with open(run / "metrics.jsonl", "a") as f:               # the loop logs on after samples.png
        f.write(json.dumps({"step": 3, "loss": 1.0, "recon": 1.0, "kl": 0.0}) + "\n")
    assert c.get("/api/info").json()["training"] is True
    assert c.get("/api/metrics").json()["rows"][-1]["step"] == 3
    (run / "samples.png").unlink()
    (run / "samples").mkdir(exist_ok=True)
    assert c.get("/api/training-samples").status_code == 404 and c.get("/api/info").status_code == 200


def test_reloads_the_newest_checkpoint(runs, tmp_path):
    """A run that trains on while it is served: the next call after `latest` moves uses the new one."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(runs["gan"], run)
    c = TestClient(create_app(run, map_size=16), base_url=BASE)
    assert c.get("/api/info").json()["step"] == 2
    genlab.train("gan", preset="tiny", max_steps=4, **TINY, data_dir=str(runs["gan"].parent / "tiny.npz"),
                 out=str(run), resume=True)
    time.sleep(1.1)                                            # the server looks at `latest` once a second
    assert c.get("/api/info").json()["step"] == 4


def test_hostile_requests(clients, runs):
    c = clients["gan"]
    for body, field in (({"n": 401}, "n"), ({"n": 0}, "n"), ({"seed": -1}, "seed"), ({"scale": 9}, "scale"),
                        ({"shift": [11.0]}, "shift"), ({"z": [[1.0] * 7]}, "z"), ({"z": []}, "z"), ({"nn": 1}, "nn")):
        r = c.post("/api/sample", json=body)
        assert r.status_code == 422 and field in r.text, (body, r.text)
    r = c.post("/api/sample", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = c.post("/api/sample", content=b'{"shift": [NaN]}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "shift" in r.text
    r = c.post("/api/sample", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.text
    chunks = (b"[" + b"0," * 1000 for _ in range(600))                          # chunked, no length
    assert c.post("/api/reconstruct", content=chunks).status_code == 413
    for path in ("/static/../app.py", "/static/..%2f..%2fapp.py", "/static/%2e%2e/%2e%2e/io.py",
                 "/../../etc/passwd", "/static/index.html/..", "/static/app.js%00.png", "/etc/passwd"):
        assert c.get(path).status_code == 404, path
    assert c.get("/", headers={"host": "evil.example:8000"}).status_code == 400   # DNS rebinding
    assert c.get("/api/info", headers={"host": "attacker.127.0.0.1.nip.io"}).status_code == 400
    r = c.post("/api/sample", json={}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert c.post("/api/sample", json={}, headers={"origin": BASE}).status_code == 200
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200


def test_token_when_not_loopback(runs):
    app = create_app(runs["gan"], host="0.0.0.0", token="s3cret", map_size=16)
    c = TestClient(app, base_url="http://192.168.1.20:8000")
    assert c.get("/api/info").status_code == 401 and c.get("/docs").status_code == 401
    assert c.get("/api/info", headers={"x-genlab-token": "wrong"}).status_code == 401
    assert c.get("/api/info", headers={"x-genlab-token": "s3cret"}).status_code == 200
    assert c.get("/api/info?token=s3cret").status_code == 200
    page = c.get("/?token=s3cret")                             # the page sets the cookie its calls carry
    assert page.status_code == 200 and c.get("/api/info").status_code == 200
    assert TestClient(app, base_url="http://evil.example:8000").get("/?token=s3cret").status_code == 400


def test_cli_errors(capsys, runs, tmp_path):
    one_line_error(capsys, "serve", tmp_path, match="no checkpoint")
    one_line_error(capsys, "serve", runs["gan"], "--port", "70000", match="--port")
    with socket.socket() as s:                                  # a port already taken
        s.bind(("127.0.0.1", 0))
        s.listen()
        one_line_error(capsys, "serve", runs["gan"], "--port", s.getsockname()[1], match="cannot listen")


def rss_kib(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def start_server(run, *flags):
    """`genlab serve` in a subprocess -> (process, base URL, printed lines)."""
    p = subprocess.Popen([sys.executable, "-m", "genlab.cli", "serve", str(run), "--port", "0", *flags],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"open (http://\S+)", line)
    assert m, (line, p.stderr.read() if p.poll() is not None else "")
    return p, m.group(1), line


def test_real_server_off_loopback_needs_the_token(runs):
    p, url, line = start_server(runs["gan"], "--host", "0.0.0.0")
    try:
        token = re.search(r"token=(\S+)", line).group(1)
        base = url.split("?")[0].rstrip("/").replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(base + "/api/info").status_code == 401
        assert httpx.get(base + "/api/info", headers={"x-genlab-token": token}).json()["step"] == 2
    finally:
        p.terminate()
        p.wait(10)
    assert "warning: serving on 0.0.0.0" in p.stderr.read()


@pytest.mark.slow  # ~5 s idle, 15-25 s on the loaded 2-core machine
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmRSS from /proc")
def test_burst_against_a_real_server(runs):
    p, url, _ = start_server(runs["gan"], "--queue", "4")
    try:
        base = url.rstrip("/")
        with httpx.Client() as c:
            for _ in range(20):                                # warm-up, then the baseline
                assert c.post(base + "/api/sample", json={"n": 16}).status_code == 200
        before = rss_kib(p.pid)
        codes, lock = [], threading.Lock()

        def client(k):
            with httpx.Client(timeout=120) as c:  # a loaded CI machine stalls seconds
                for i in range(k * 50, k * 50 + 50):
                    r = c.post(base + "/api/sample", json={"seed": i, "n": 16})
                    with lock:
                        codes.append(r.status_code)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(codes) == 1000 and set(codes) <= {200, 503}, set(codes)
        assert codes.count(200) >= 100
        after = rss_kib(p.pid)
        assert after - before < 64 * 1024, (before, after)      # KiB: no growth with the queue
        assert httpx.get(base + "/api/info").json()["step"] == 2   # still up
    finally:
        p.terminate()
        p.wait(10)


def test_the_page_is_served_locally(clients):
    """No CDN, no build step: the page's three files reference nothing outside this server."""
    c = clients["gan"]
    for path in ("/", "/static/app.js", "/static/app.css"):
        text = c.get(path).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path
    html = c.get("/").text
    assert 'src="/static/app.js"' in html and 'href="/static/app.css"' in html
