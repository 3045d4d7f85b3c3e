"""`python -m eval ...`: see eval/cli.py."""
from eval.cli import main

main(prog_name="python -m eval")
