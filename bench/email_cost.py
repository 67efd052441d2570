"""CPU per ``parse_email`` call on the SMTP benchmark's kind of mail, in this one process.

Each mail is generated (and its multipart boundaries chosen) before the clock starts and parsed
once, as the server sees it. For instruction counts, run it twice under callgrind and divide the
difference by the number of mails (the run with ``--no-parse`` only generates the mails):

    python -m bench.email_cost                    # CPU µs per mail, best of 3 rounds
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python3.11 -m bench.email_cost --rounds 1 [--no-parse]
"""

from __future__ import annotations

import argparse
import random
import time

from adapters.email_parse import parse_email
from bench.email import bench_mail


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--mails", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-parse", action="store_true", help="generate the mails only")
    args = p.parse_args(argv)
    random.seed(7)  # the boundaries and Message-IDs the stdlib draws
    for raw in [bench_mail("warm", i, random.Random(i)) for i in range(30)]:
        parse_email(raw)  # lazy imports and first-use caches
    best = float("inf")
    for round_ in range(args.rounds):
        rng = random.Random(7)
        mails = [bench_mail(f"r{round_}", i, rng) for i in range(args.mails)]
        began = time.process_time()
        if not args.no_parse:
            for raw in mails:
                parse_email(raw)
        best = min(best, time.process_time() - began)
    print(f"parse_email: {best / args.mails * 1e6:.0f} µs CPU per mail ({args.mails} mails)")


if __name__ == "__main__":
    main()
