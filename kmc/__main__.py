"""The `kmc` command and `python -m kmc`: note SIGINT and SIGTERM from the first instant (importing kmc
takes a moment; see kmc.cli.signals), then run the CLI."""

import sys


def run() -> None:
    from kmc.cli.signals import record_early

    early = record_early()
    from kmc.cli.main import main

    sys.exit(main(early_signals=early))


if __name__ == "__main__":
    run()
