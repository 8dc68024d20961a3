"""`layert2v ui`: a local web app over the same pipeline and LayeredVideo as the CLI (see docs/UI.md)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that a taken port is a one-line error and not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ValueError(f"cannot resolve --host {host!r}; pass an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None
    sock.listen(64)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(model: Path, host: str = "127.0.0.1", port: int = 7860, open_dirs: list[Path] = (),
          out: Path = Path("layert2v-ui"), layer_weights: Path | None = None, untrained_layers: bool = False) -> int:
    """Check everything, bind, say where it listens, then serve until Ctrl-C."""
    import uvicorn

    from ..preflight import check_layer_weights, check_model_path
    from .server import create_app

    check_layer_weights(check_model_path(model), layer_weights, untrained_layers)
    for directory in open_dirs:
        if not Path(directory).is_dir():
            raise FileNotFoundError(f"--open {directory}: no such directory; pass an output directory of "
                                    "`layert2v generate`")
    sock = bind(host, port)
    try:
        hosts = ["127.0.0.1", "localhost", host] if is_loopback(host) and ":" not in host else None
        app = create_app(model, out, open_dirs, allowed_hosts=hosts, layer_weights=layer_weights,
                         untrained_layers=untrained_layers)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    print(f"layert2v ui: listening on http://{shown}:{sock.getsockname()[1]}/ (model {model}, runs saved under "
          f"{app.state.out})")
    if is_loopback(host):
        print("  only this machine can connect; pass --host 0.0.0.0 to open it to the network")
    else:
        print(f"  WARNING: reachable from other machines on {host}; the app has no login")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    return 0
