"""The interactive page's server: `create_app(run_dir) -> FastAPI`, a JSON/PNG API over the library
(space.py, apps/interpolate.py) and the one static page. Every parameter is bounded by its pydantic
model (out of range -> 422 naming the field); no endpoint takes a path; every model call goes
through guard.Worker (one thread, bounded queue); guard.Guard checks Host, Origin, token and body
size. The run may still be training: the newest checkpoint is loaded when the run's `latest` changes
(checkpoints are written atomically, so a reader never sees half of one)."""
from __future__ import annotations

import base64
import math
import secrets
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..apps.interpolate import slerp
from ..models import Autoencoder
from . import space
from .guard import TOKEN_COOKIE, Guard, Worker
from .served import Served, read_metrics, training

STATIC = Path(__file__).parent / "static"
PAGES = {"/": ("index.html", "text/html"), "/static/app.js": ("app.js", "text/javascript"),
         "/static/app.css": ("app.css", "text/css")}
MAX_N, MAX_PIXELS = 400, 400 * 3 * 64 * 64   # images per call; their total size (float32: 19 MB)
MAX_BODY = 1 << 20                           # 1 MiB per request body
SEED = Field(0, ge=0, le=2 ** 63 - 1)
PNG = {"media_type": "image/png", "headers": {"Cache-Control": "no-store"}}


class Strict(BaseModel):
    # a misspelt field is a 422, not silently ignored; NaN/inf (Python's json reads them) too
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SampleIn(Strict):
    seed: int = SEED
    n: int = Field(1, ge=1, le=MAX_N)
    labels: list[int] | None = Field(None, max_length=MAX_N, description="one (all images) or n classes")
    z: list[list[float]] | None = Field(None, min_length=1, max_length=MAX_N, description="n latents; overrides seed")
    shift: list[float] = Field([], max_length=64, description="amounts along /api/directions, in sd")
    nrow: int | None = Field(None, ge=1, le=MAX_N)
    scale: int = Field(1, ge=1, le=8)


class InterpolateIn(Strict):
    seed_a: int = SEED
    seed_b: int = Field(1, ge=0, le=2 ** 63 - 1)
    label: int | None = None
    steps: int = Field(16, ge=2, le=64)
    t: float | None = Field(None, ge=0, le=1, description="one frame at t; else all steps")
    format: str = Field("png", pattern="^(png|gif)$")
    scale: int = Field(4, ge=1, le=8)


class ReconstructIn(Strict):
    pixels: list[int] = Field(..., max_length=3 * 128 * 128, description="C*H*W grey levels 0..255, "
                                                                         "row-major, 0 = black")


def create_app(run_dir, host: str = "127.0.0.1", token: str | None = None, queue: int = 32,
               directions: int = 8, map_size: int = 1000, allow_hosts=()) -> FastAPI:
    """The app for one run folder (or checkpoint folder). `host`: the address it is bound to (the
    Host check allows it and the loopback names); `token`: required on /api and /docs when given."""
    served = Served(Path(run_dir), directions, map_size)
    worker = Worker(queue)
    app = FastAPI(title="genlab serve", version="1", description=__doc__, on_shutdown=[worker.close])
    app.add_middleware(Guard, host=host, token=token, max_body=MAX_BODY, allow_hosts=allow_hosts)
    app.state.served, app.state.worker = served, worker

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):  # one line per field, without echoing the input (may be NaN or 1 MB)
        where = lambda e: ".".join(str(p) for p in e["loc"] if p not in ("body", "query")) or "body"
        return JSONResponse({"detail": "; ".join(f"{where(e)}: {e['msg']}" for e in exc.errors()[:5])},
                            status_code=422)

    async def call(fn, *args):
        def job():
            served.refresh()
            return fn(*args)
        return await worker.run(job)

    for path, (name, media) in PAGES.items():
        body = (STATIC / name).read_bytes()
        def page(request: Request, body=body, media=media):
            r = Response(body, media_type=media, headers={"Cache-Control": "no-cache"})
            given = request.query_params.get("token", "").encode()
            if token and secrets.compare_digest(given, token.encode()):  # for the page's own calls
                r.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return r
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)

    @app.get("/api/info", summary="the model: family, classes, z_dim, image shape, checkpoint step")
    async def info():
        return await call(served.info)

    def check_labels(labels, n):
        k = served.model.num_classes
        if labels is None:
            return None
        if not k:
            raise HTTPException(422, "labels: this model is unconditional (num_classes 0); leave them out")
        if len(labels) not in (1, n) or not all(0 <= c < k for c in labels):
            raise HTTPException(422, f"labels: give 1 or n={n} classes, each in 0..{k - 1}")
        return torch.tensor(labels * (n if len(labels) == 1 else 1))

    def check_n(n):
        if n * math.prod(served.model.shape) > MAX_PIXELS:
            raise HTTPException(422, f"n: at most {MAX_PIXELS // math.prod(served.model.shape)} images of "
                                     f"{tuple(served.model.shape)} per call")

    def do_sample(p: SampleIn) -> bytes:
        m = served.model
        n = len(p.z) if p.z is not None else p.n
        check_n(n)
        y = check_labels(p.labels, n)
        if p.z is not None:
            if any(len(v) != m.z_dim for v in p.z) or any(abs(a) > 100 for v in p.z for a in v):
                raise HTTPException(422, f"z: each latent is {m.z_dim} numbers with |z| <= 100")
            z = torch.tensor(p.z)
        else:
            z = torch.randn(n, m.z_dim, generator=torch.Generator().manual_seed(p.seed))
        if p.shift:
            if len(p.shift) > len(served.dirs["u"]) or any(abs(a) > 10 for a in p.shift):
                raise HTTPException(422, f"shift: at most {len(served.dirs['u'])} amounts, each in -10..10")
            z = space.shift(z, served.dirs["u"], p.shift)
        with torch.inference_mode():
            x = m.generate(z, y)
        return space.png_grid(x, p.nrow, p.scale)

    @app.post("/api/sample", summary="images at seed (or given z), moved along directions -> PNG grid",
              response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def sample(p: SampleIn):
        return Response(await call(do_sample, p), **PNG)

    @app.get("/api/directions", summary="GANSpace directions in z (unit vectors) and their variance")
    async def get_directions():
        return await call(lambda: {"u": served.dirs["u"].tolist(), "explained": served.dirs["explained"]})

    def do_interpolate(p: InterpolateIn) -> tuple[bytes, str]:
        m = served.model
        z0, z1 = (torch.randn(1, m.z_dim, generator=torch.Generator().manual_seed(s)) for s in (p.seed_a, p.seed_b))
        t = torch.tensor([p.t]) if p.t is not None else torch.linspace(0, 1, p.steps)
        z = slerp(z0[0], z1[0], t)                                                     # (s, z_dim)
        y = check_labels(None if p.label is None else [p.label], len(z))
        with torch.inference_mode():
            x = m.generate(z, y)
        if p.format == "gif":
            return space.gif(x, p.scale), "image/gif"
        return space.png_grid(x, len(x), p.scale), "image/png"

    @app.post("/api/interpolate", summary="slerp between the latents of two seeds -> PNG strip or GIF",
              response_class=Response, responses={200: {"content": {"image/png": {}, "image/gif": {}}}})
    async def interpolate(p: InterpolateIn):
        data, media = await call(do_interpolate, p)
        return Response(data, media_type=media, headers={"Cache-Control": "no-store"})

    def need_autoencoder():
        if not isinstance(served.model, Autoencoder):
            raise HTTPException(422, f"{served.model.name} is not an autoencoder (reconstruct and the "
                                     f"latent map need a VAE run)")

    def do_reconstruct(p: ReconstructIn) -> dict:
        need_autoencoder()
        m, shape = served.model, served.model.shape
        if len(p.pixels) != math.prod(shape) or not all(0 <= v <= 255 for v in p.pixels):
            raise HTTPException(422, f"pixels: {math.prod(shape)} values (C*H*W of {tuple(shape)}) in 0..255")
        x = torch.tensor(p.pixels, dtype=torch.float32).view(1, *shape) / 127.5 - 1
        with torch.inference_mode():
            mu, _ = m.encode(x)
            r = m.reconstruct(x)
        point = space.place(served.latent_map(), mu)[0]
        return {"png": "data:image/png;base64," + base64.b64encode(space.png_grid(r, scale=4)).decode(),
                "point": point.tolist(), "mu": mu[0].tolist()}

    @app.post("/api/reconstruct", summary="a drawn image -> its reconstruction (PNG data URL) and map point")
    async def reconstruct(p: ReconstructIn):
        return await call(do_reconstruct, p)

    def do_map() -> dict:
        need_autoencoder()
        lm = served.latent_map()
        return {"points": lm["points"].round(4).tolist(), "labels": lm["labels"].tolist(),
                "explained": lm["explained"].tolist()}

    @app.get("/api/latent-map", summary="2-D PCA of the latent means of training images (VAE)")
    async def latent_map():
        return await call(do_map)

    @app.get("/api/metrics", summary="the run's metrics.jsonl (thinned to `rows`) and whether it trains")
    def metrics(rows: int = Query(500, ge=1, le=5000)):
        return {"training": training(served.run), "loss_stats": list(served.model.loss_stats),
                "rows": read_metrics(served.run, rows)}

    @app.get("/api/training-samples", summary="the newest samples grid the training loop wrote (PNG)",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def training_samples():
        found = [p for p in [served.run / "samples.png", *(served.run / "samples").glob("step-*.png")]
                 if p.is_file()]
        if not found:
            raise HTTPException(404, "this run has written no samples grid yet")
        return Response(max(found, key=lambda p: p.stat().st_mtime).read_bytes(), **PNG)

    return app
