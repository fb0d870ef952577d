"""An HTTP server that answers fixed bytes from memory: the floor under any answer of ours.

    python -m benchmarks.floor_server PORT ANSWERS_DIR

ANSWERS_DIR holds `paths.json` ({path: [file name, content coding or null]}) and the files.
Each GET of a path is answered with that file's bytes (and Content-Encoding, for a compressed
answer) by uvicorn and a bare ASGI callable: no database, no
framework, nothing computed. The same load against it and against the API tells what
our code costs and what sending the bytes costs on this machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn


def app_of(answers: dict[str, tuple[bytes, str | None]]):
    async def app(scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        body, coding = answers.get(path, (None, None))
        headers = [(b"content-type", b"application/json")] + ([(b"content-encoding", coding.encode())] if coding else [])
        await send({"type": "http.response.start", "status": 200 if body is not None else 404, "headers": headers})
        await send({"type": "http.response.body", "body": body or b""})
    return app


def main() -> None:
    port, folder = int(sys.argv[1]), Path(sys.argv[2])
    answers = {path: ((folder / name).read_bytes(), coding)
               for path, (name, coding) in json.loads((folder / "paths.json").read_text()).items()}
    uvicorn.run(app_of(answers), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
