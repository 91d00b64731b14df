"""`genlab serve RUN [--host 127.0.0.1] [--port 8000]`: the interactive page of a run (serve/app.py).
Loopback only by default; another --host prints a warning and a per-launch token that every API
call then needs (shown once, here)."""
from __future__ import annotations

import sys

from ..registry import UsageError
from .base import Parser, command


@command("serve", "the interactive page of a run: samples, latent sliders, walks, VAE canvas, training")
def serve(argv: list[str]) -> None:
    s = Parser(prog="genlab serve")
    s.add_argument("run", help="run folder (or a ckpt-XXXXXXXX folder); it may still be training")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only); any other needs the token")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name the page may be reached by (e.g. the machine's DNS name)")
    s.add_argument("--threads", type=int, default=1, help="torch threads for the model (default 1)")
    s.add_argument("--queue", type=int, default=32, help="model calls that may wait; more get 503")
    args = s.parse_args(argv)
    for flag, v, lo, hi in (("--port", args.port, 0, 65535), ("--threads", args.threads, 1, 256),
                            ("--queue", args.queue, 1, 10_000)):
        if not lo <= v <= hi:
            raise UsageError(f"{flag} must be in {lo}..{hi}, got {v}")
    import socket

    import torch
    import uvicorn

    from ..serve.app import create_app
    from ..serve.guard import is_loopback, new_token
    torch.set_num_threads(args.threads)
    token = None if is_loopback(args.host) else new_token()
    app = create_app(args.run, host=args.host, token=token, queue=args.queue, allow_hosts=args.allow_host)
    try:  # bind first, so that a port in use is a one-line error, not a uvicorn traceback
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # no Nagle on the accepted sockets (Linux: inherited from this one): uvicorn writes a response's
        # head and body separately, and Nagle + the client's delayed ACK added 40 ms to every call
        # (measured: GET /static/app.css 44 ms -> 0.8 ms)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((args.host, args.port))
        sock.listen(2048)  # listening before the address is printed: an early client waits, not refused
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; choose another "
                         f"--port (or --host)") from None
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    if token:
        print(f"genlab: warning: serving on {args.host}, reachable from other machines; plain HTTP, "
              f"anyone holding the token can use the model", file=sys.stderr)
        print(f"genlab serve: open http://{shown}:{port}/?token={token}", flush=True)
    else:
        print(f"genlab serve: open http://{shown}:{port}/", flush=True)
    # limit_concurrency: connections beyond it get 503 from uvicorn itself (memory stays bounded)
    config = uvicorn.Config(app, log_level="warning", limit_concurrency=256, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
