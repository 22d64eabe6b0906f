"""The `kmc` command and `python -m kmc`: note SIGINT and SIGTERM from the first instant (importing kmc
takes a moment; see kmc.cli.signals), then run the CLI, with only the command it runs registered
(kmc.cli.argv.entry_command)."""

import os
import sys


def run() -> None:
    from kmc.cli.signals import record_early

    early = record_early()
    from kmc.cli import argv

    argv.only_command = argv.entry_command(sys.argv[1:], os.environ)
    from kmc.cli.main import main

    sys.exit(main(early_signals=early))


if __name__ == "__main__":
    run()
