"""The `mixserve` command: a dispatcher. Each subcommand's arguments and handler live in the package
that does the work (serving, models, bench, eval, soak), so this file only lists them."""
from __future__ import annotations

import argparse
import sys

from mixserve.bench import cli as bench
from mixserve.eval import cli as evaluation
from mixserve.models import cli as models
from mixserve.serving import cli as serving
from mixserve.soak import cli as soak

DESCRIPTION = "The `mixserve` command: make test models, generate from an ensemble."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mixserve", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    models.add_models(sub)
    serving.add_commands(sub)
    bench.add_command(sub)
    evaluation.add_command(sub)
    models.add_weights(sub)
    soak.add_command(sub)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ValueError as e:  # config and request errors: say what was wrong, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
