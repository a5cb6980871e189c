"""`mixserve eval`: its arguments and the table it prints."""
from __future__ import annotations

from mixserve.eval.tasks import SUITES
from mixserve.serving.cli import member_weights


def add_command(sub) -> None:
    evaluate = sub.add_parser("eval", help="score each member, me and ce with lm-evaluation-harness over HTTP")
    evaluate.add_argument("--config", required=True)
    evaluate.add_argument("--examples", type=int, default=100, help="examples written per generated task")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N examples of each task")
    evaluate.add_argument("--check-samples", type=int, default=2000, help="ME samples for the mixture check")
    evaluate.add_argument("--out", default="eval-out", help="directory for eval.json, eval.md, eval.png, tasks/")
    evaluate.add_argument("--suite", choices=list(SUITES), default="default",
                          help="the tasks: default (arithmetic, facts, multiple choice, text) or experts (sums, clock, "
                               "their held-out phrasings, multiple choice, text; docs/evaluation.md)")
    evaluate.add_argument("--concurrent", type=int, default=1,
                          help="requests lm-eval keeps in flight; greedy answers do not depend on it")
    evaluate.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    evaluate.add_argument("--weights", type=member_weights, help="the ensemble rows' member weights instead of the "
                                                                 "config's, e.g. generalist=0.3,specialist=0.7")
    evaluate.add_argument("--rows", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                          help="run only these rows (e.g. me,ce after refitting the gate, or those a run cut "
                               "short lacks) and carry the others from the eval.json already in --out, which must "
                               "be a run of the same config, suite, --examples and --limit")
    evaluate.set_defaults(handler=_eval)


def _eval(args) -> None:
    from .harness import run_eval
    from .report import markdown

    for name in ("examples", "limit", "check_samples", "concurrent"):
        if (getattr(args, name) or 1) < 1:
            raise ValueError(f"--{name} must be at least 1")
    report = run_eval(args.config, args.out, args.limit, args.address, args.examples, args.check_samples, args.weights,
                      args.suite, args.concurrent, args.rows)
    print(markdown(report))
    print(f"wrote eval.json, eval.md and eval.png to {args.out}")
