"""``attri-ssc serve RUN``: the interactive attribute explorer in the browser (``attri_ssc.serve``).

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``pip install 'attri-ssc[serve]'``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attri_ssc.errors import ConfigError

NOTE = """Open the printed address in a browser. The JSON API behind the page is documented at
http://127.0.0.1:PORT/docs (docs/explorer.md)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="interactive attribute explorer in the browser (local web app)",
                       description="Serve a page that edits a trained run's attributes live: gallery of held-out "
                                   "images and uploads, one slider per attribute, re-reads before/after, "
                                   "interpolation, export. Binds 127.0.0.1 unless --host says otherwise.",
                       epilog=NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder written by attri-ssc train (an attri_ssc run)")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder (default: the one the run recorded); gives the gallery its held-out images")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the model and "
                        "the upload form to the network)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--max-upload-mb", type=float, default=64.0, help="largest uploaded file in MiB (default 64)")
    p.add_argument("--max-voxels", type=int, default=16 * 2**20,
                   help="largest uploaded volume in voxels (default 16 Mi)")
    p.add_argument("--gallery", type=int, default=200, help="at most this many held-out images (default 200)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for the model (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from attri_ssc.serve import missing_packages

    missing = missing_packages()
    if missing:
        raise ConfigError(f"attri-ssc serve needs {', '.join(missing)} (the serve extra): "
                          f"pip install 'attri-ssc[serve]'")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_upload_mb <= 0 or args.max_voxels < 64:
        raise ConfigError("--max-upload-mb must be > 0 and --max-voxels >= 64")
    if args.gallery < 0:
        raise ConfigError(f"--gallery must be >= 0, got {args.gallery}")

    import socket

    import torch
    import uvicorn

    from attri_ssc.api import load_run
    from attri_ssc.serve.app import create_app
    from attri_ssc.serve.uploads import UploadLimits

    if args.threads:
        torch.set_num_threads(args.threads)
    run_ = load_run(args.run, data=args.data, device=args.device)
    run_.statistics  # noqa: B018 - computed (or read) now, not on the first request
    # bind first, so that port 0 reports the port it got and a taken port is a clear error
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); try another --port") from None
    sock.listen(128)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host

    def ready() -> None:
        print(f"attri-ssc explorer for {args.run}: http://{shown}:{port}/  (JSON API: http://{shown}:{port}/docs; "
              f"Ctrl-C stops)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"attri-ssc serve: warning: listening on {args.host}: anyone who can reach it can use the model "
                  f"and upload files", file=sys.stderr)

    app = create_app(run_, UploadLimits(max_bytes=int(args.max_upload_mb * 2**20), max_voxels=args.max_voxels),
                     gallery_limit=args.gallery, on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
