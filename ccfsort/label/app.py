"""The label page's web application (Flask) and its local server.

HTTP interface (docs/training.md, "Labelling a run"); every answer is JSON
except ``GET /``:

============================  ==================================================
``GET /``                     the page (``static/label.html``; no asset from
                              outside the package, so it works offline)
``GET /api/meta``             label names, keys, exclusive groups, progress
``GET /api/next``             the frame to label next: ``index`` (its store
                              row; null when every frame is labelled), its
                              pictures, probabilities, saved labels, progress
``GET /api/frame/<index>``    the same for any row
``POST /api/labels``          ``{"index": i, "labels": ["round", ...]}`` saves
                              frame i; a bad index, an unknown name or two
                              labels of one exclusive group: 400 and a
                              message, nothing saved
``POST /api/undo``            takes back this session's last save
============================  ==================================================

POST bodies must be ``application/json``: a page of another site cannot
send that to this server without the browser asking first (CORS), and the
server never says yes.
"""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

from .session import LabelError, LabelSession

__all__ = ["LabelServer", "create_app"]

#: The page and its script and style, served from the package.
STATIC = Path(__file__).with_name("static")


def create_app(session: LabelSession):
    """The Flask application serving ``session``."""
    from flask import Flask, jsonify, request, send_from_directory

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    @app.errorhandler(LabelError)
    def refuse(error):
        return jsonify(error=str(error)), 400

    @app.get("/")
    def page():
        return send_from_directory(STATIC, "label.html")

    @app.get("/api/meta")
    def meta():
        return jsonify(**session.meta(), progress=session.progress())

    @app.get("/api/next")
    def next_frame():
        row = session.next_index()
        frame = {"index": None} if row is None else session.frame(row)
        return jsonify(**frame, progress=session.progress())

    @app.get("/api/frame/<int:index>")
    def frame(index: int):
        return jsonify(**session.frame(index), progress=session.progress())

    @app.post("/api/labels")
    def save():
        body = _json_object(request)
        progress = session.save(body.get("index"), body.get("labels"))
        return jsonify(saved=body["index"], progress=progress)

    @app.post("/api/undo")
    def undo():
        return jsonify(index=session.undo(), progress=session.progress())

    return app


def _json_object(request) -> dict:
    """The request's JSON object body, or LabelError (400)."""
    if not request.is_json:
        raise LabelError("send the labels as JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "index" not in body or "labels" not in body:
        raise LabelError('expected a JSON object {"index": i, "labels": [names]}')
    return body


class LabelServer:
    """A threaded local HTTP server for a :class:`LabelSession`.

    Parameters
    ----------
    session : LabelSession
    host : str
        Address to listen on: 127.0.0.1 (this machine only) unless asked.
    port : int
        0 picks a free port (see :attr:`url`).

    Raises
    ------
    LabelError
        The address cannot be listened on (port in use, not allowed, no such host).
    """

    def __init__(self, session: LabelSession, *, host: str = "127.0.0.1", port: int = 8765):
        from werkzeug.serving import make_server

        listener = _listen(host, port)
        self._server = make_server(
            host, listener.getsockname()[1], create_app(session), threaded=True,
            fd=listener.fileno(),
        )  # fmt: skip
        listener.close()  # the server holds its own duplicate of the socket
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    def serve_forever(self) -> None:
        """Answer requests until interrupted (Ctrl-C) or :meth:`shutdown`."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def start(self) -> LabelServer:
        """Serve on a background thread (tests, benchmarks); returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``(host, port)``, or one LabelError line saying why not."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise LabelError(f"cannot listen on {host}:{port} ({error})") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        reason = (
            "the port is in use"
            if error.errno == errno.EADDRINUSE
            else error.strerror or str(error)
        )
        raise LabelError(
            f"cannot listen on {host}:{port}: {reason}; choose another port with --port"
        ) from None
    return listener
