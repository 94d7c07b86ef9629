"""`make dev`: the example app on :3939 and `ratchet dev` on :8288, which syncs it.

Both stop on Ctrl-C. Try: curl -X POST localhost:8288/e/dev -d '{"name": "shop/order.created",
"data": {"id": "o1", "total": 12.5}}' and then curl localhost:8288/v1/runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

APP_PORT = int(os.environ.get("RATCHET_EXAMPLE_PORT", "3939"))
SERVER_PORT = int(os.environ.get("RATCHET_PORT", "8288"))


def main() -> int:
    env = {**os.environ, "INNGEST_DEV": f"http://127.0.0.1:{SERVER_PORT}"}
    app = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.shop:app", "--port", str(APP_PORT),
                            "--log-level", "warning"], env=env)
    try:
        return subprocess.call([sys.executable, "-m", "ratchet.server.cli", "dev", "--port", str(SERVER_PORT),
                                "-u", f"http://127.0.0.1:{APP_PORT}/api/inngest"])
    except KeyboardInterrupt:
        return 0
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(timeout=5)
        except subprocess.TimeoutExpired:
            app.kill()


if __name__ == "__main__":
    sys.exit(main())
