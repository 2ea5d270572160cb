"""The container's HEALTHCHECK: exit 0 when this container's server answers 200 on
/api/v2/health, else 1. It reads the same settings as the server (XPRESSO_ENV_CONFIG, the
XPRESSO_ENV_* variables), so it probes whatever port the configuration chose."""
from __future__ import annotations

import sys
import urllib.error
import urllib.request

from xpresso_env.config import load_settings

# A server listening on every address is probed on loopback.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def main() -> int:
    server = load_settings().server
    host = WILDCARDS.get(server.host, server.host)
    netloc = f"[{host}]" if ":" in host else host
    url = f"http://{netloc}:{server.port}/api/v2/health"
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
