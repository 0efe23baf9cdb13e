"""A pytest fork server for mutation testing: imports torch and pytest once, then runs each
test command in a fresh fork (which imports the — possibly mutated — vaekit from disk itself).

This only saves the ~2–3 s of `import torch` per mutant; every mutant still gets a new process with
nothing of vaekit imported. Usage (see docs/mutation.md):

    python mutation/forkserver.py /tmp/vaekit-mut.sock &          # once
    python mutation/forkserver.py /tmp/vaekit-mut.sock -- -x -q tests/test_loop.py   # a client: pytest's exit code
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

TIMEOUT_S = 60  # a child still running after this is killed (cosmic-ray's own timeout is shorter)


def serve(path: str) -> None:
    import numpy  # noqa: F401  the heavy imports, shared by every fork
    import pytest
    import torch
    import torch.distributions  # noqa: F401

    assert not any(m == "vaekit" or m.startswith("vaekit.") for m in sys.modules), "vaekit must not be preloaded"
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            pid = os.fork()
            if pid == 0:
                server.close()
                code = 3
                try:
                    signal.alarm(TIMEOUT_S)
                    os.chdir(request["cwd"])
                    out = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(out, 1)
                    os.dup2(out, 2)
                    import pytest

                    code = int(pytest.main(request["args"]))
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sendall(f"{code}\n".encode())
            except OSError:  # the client was killed (a timeout)
                pass


def client(path: str, args: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    conn.sendall((json.dumps({"cwd": os.getcwd(), "args": args}) + "\n").encode())
    reply = conn.makefile().readline().strip()
    return int(reply) if reply else 4


if __name__ == "__main__":
    if "--" in sys.argv:
        i = sys.argv.index("--")
        code = client(sys.argv[1], sys.argv[i + 1 :])
        sys.exit(0 if code == 0 else 1)
    serve(sys.argv[1])
