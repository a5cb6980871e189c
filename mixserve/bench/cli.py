"""`mixserve bench`: its arguments and the table it prints."""
from __future__ import annotations

import argparse


def add_command(sub) -> None:
    bench = sub.add_parser("bench", help="measure me against single members, ce-parallel and ce-sequential")
    bench.add_argument("--config", help="the ensemble to measure (required unless --calibrate)")
    bench.add_argument("--calibrate", metavar="BENCH_DIR",
                       help="print engine sim's step_ms and per_seq_ms fitted from an earlier run's folder, and exit")
    bench.add_argument("--scale", action="store_true",
                       help="measure routers and member pools at scale on simulated members instead "
                            "(scale.json, scale.md, scale.png in --out; docs/performance.md, \"Scale-out\")")
    bench.add_argument("--colocate", action="store_true",
                       help="measure --config's members (one base and its adapters) each in its own process against "
                            "all in one (colocate.json, colocate.md in --out; docs/performance.md, \"Co-located experts\")")
    bench.add_argument("--prompt-tokens", type=int, default=64, help="prompt length, in words (about tokens)")
    bench.add_argument("--max-tokens", type=int, default=128)
    bench.add_argument("--concurrency", type=_levels, default=(1, 4, 16), help="comma-separated, e.g. 1,4,16")
    bench.add_argument("--repeats", type=int, default=5, help="requests per method at batch 1")
    bench.add_argument("--out", default="bench-out", help="directory for bench.json, bench.md, bench.png")
    bench.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    bench.add_argument("--engines", type=_engines, default=None,
                       help="member engines to measure, comma-separated (default: transformers,vllm where vLLM "
                            "is installed, else transformers; sim only when named)")
    bench.set_defaults(handler=_bench)


def _bench(args) -> None:
    if args.calibrate:
        from .calibrate import calibration_text

        print(calibration_text(args.calibrate))
        return
    if args.scale:
        from .scale import run_scale
        from .scale_report import markdown as scale_table

        print(scale_table(run_scale(args.out, address=args.address)))
        print(f"wrote scale.json, scale.md and scale.png to {args.out}")
        return
    if not args.config:
        raise ValueError("bench needs --config FILE (or --calibrate BENCH_DIR, or --scale)")
    if args.colocate:
        from .colocate import markdown as colocate_table, run_colocate

        if args.engines and len(args.engines) > 1:
            raise ValueError("bench --colocate measures one engine at a time: --engines names one")
        print(colocate_table(run_colocate(args.config, args.prompt_tokens, args.max_tokens, args.concurrency,
                                          args.repeats, out=args.out, address=args.address,
                                          engine=args.engines[0] if args.engines else None)))
        print(f"wrote colocate.json and colocate.md to {args.out}")
        return
    from .methods import run_bench
    from .report import markdown

    for name in ("prompt_tokens", "max_tokens", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    report = run_bench(args.config, args.prompt_tokens, args.max_tokens, args.concurrency, args.repeats,
                       out=args.out, address=args.address, engines=args.engines)
    print(markdown(report))
    print(f"wrote bench.json, bench.md and bench.png to {args.out}")


def _engines(text: str) -> tuple[str, ...]:
    from mixserve.config import ENGINES

    engines = tuple(e.strip() for e in text.split(",") if e.strip())
    if not engines or any(e not in ENGINES for e in engines):
        raise argparse.ArgumentTypeError(f"engines must be a comma-separated list of {', '.join(ENGINES)}")
    return engines


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(c) for c in text.split(",")}))
    except ValueError:
        levels = ()
    if not levels or levels[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16 (got {text!r})")
    return levels
