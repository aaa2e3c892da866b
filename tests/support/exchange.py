"""A loopback HTTP server that serves scripted exchange ticker replies (for the price adapters' tests)."""

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.backends import free_port


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0


@dataclass
class ExchangeServer:
    """Serves scripted replies by path; records each request's path and query."""

    base_url: str
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def reply(self, path: str, payload: object, status: int = 200, delay: float = 0.0) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.replies[path] = Reply(status, body, delay)


@contextmanager
def serve_exchange() -> Iterator[ExchangeServer]:
    """Serve on 127.0.0.1 until the block ends; unknown paths answer 404."""
    port = free_port()
    server_state = ExchangeServer(base_url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            path = self.path.split("?", 1)[0]
            reply = server_state.replies.get(path, Reply(404, b'{"message":"not found"}'))
            if reply.delay:
                time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (timeout test)

        def log_message(self, *_: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
