"""One GrowthBook SDK client in streaming mode, in its own process, reporting a flag's value.

    python -m bench.sdk_client --api-host http://127.0.0.1:8000 --client-key sdk-... \\
        --feature checkout-kill [--attributes '{"id": "u1"}']

The official ``growthbook`` SDK with ``streaming=True``: it fetches ``/api/features/<client
key>``, then follows ``/sub/<client key>``. The process evaluates the feature every
millisecond and prints ``value <monotonic seconds> <value as JSON>`` when it changes (the first
line is the value it starts with); the caller compares the clock with its own
(``time.monotonic`` is one clock for every process of a Linux machine). One client per process
because the SDK keeps one stream per process (its feature repository is a module singleton).
Used by the propagation benchmark (bench/propagation.py) and the streaming end-to-end test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

_MISSING = object()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-host", required=True)
    parser.add_argument("--client-key", required=True)
    parser.add_argument("--feature", required=True)
    parser.add_argument("--attributes", default='{"id": "unit-1"}')
    parser.add_argument("--seconds", type=float, default=3600, help="exit after this long")
    args = parser.parse_args(argv)

    from growthbook import GrowthBook

    gb = GrowthBook(
        api_host=args.api_host,
        client_key=args.client_key,
        attributes=json.loads(args.attributes),
        streaming=True,
    )
    last: object = _MISSING
    stop_at = time.monotonic() + args.seconds
    try:
        while time.monotonic() < stop_at:
            value = gb.eval_feature(args.feature).value
            if value != last:
                print(f"value {time.monotonic():.6f} {json.dumps(value)}", flush=True)
                last = value
            time.sleep(0.001)
    except KeyboardInterrupt:
        pass
    finally:
        gb.destroy(timeout=2)


if __name__ == "__main__":
    main(sys.argv[1:])
