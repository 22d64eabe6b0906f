from kmc.cli.main import run

run()
