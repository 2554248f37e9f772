"""Run one provider fake as its own process: prints its URL on stdout's first line.

    python -m tests.fakes.run_server --protocol novita --port 0 --latency 0.2 --record log.jsonl
"""

from __future__ import annotations

import argparse
import signal
import sys

from tests.fakes import FAKES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--protocol", choices=sorted(FAKES), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before a task (or sync call) completes")
    parser.add_argument("--record", default=None, help="append every request to this JSONL file")
    parser.add_argument("--key", default="test-key", help="the API key the fake accepts")
    parser.add_argument("--polls-before-done", type=int, default=0)
    parser.add_argument("--outcome", choices=["succeed", "fail", "never", "filtered"], default="succeed")
    args = parser.parse_args(argv)

    fake = FAKES[args.protocol](key=args.key, latency=args.latency, record=args.record, host=args.host, port=args.port)
    book = getattr(fake, "book", None)
    if book is not None:
        book.polls_before_done = args.polls_before_done
        book.outcome = args.outcome
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(fake.url, flush=True)
    try:
        fake.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
