"""`mixserve generate`, `mixserve serve` and `mixserve k8s render`: an ensemble from a config, answered
here, served until Ctrl-C, or rendered as KubeRay manifests."""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import threading

from mixserve.cluster.ray_cluster import connect
from mixserve.config import ConfigError, load_config

from .keys import ApiKeys


def add_commands(sub) -> None:
    gen = sub.add_parser("generate", help="generate from an ensemble config")
    gen.add_argument("--config", required=True)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--chat", action="store_true", help="send the prompt as a user message (chat template)")
    gen.add_argument("--method", choices=["me", "ce", "single"])
    gen.add_argument("--member", help="the member for --method single")
    gen.add_argument("--weights", type=member_weights, help="per-member weights, e.g. a=0.7,b=0.3")
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
    gen.set_defaults(handler=_generate)

    srv = sub.add_parser("serve", help="serve the ensemble over OpenAI-compatible HTTP and gRPC (Ray Serve)")
    srv.add_argument("--config", required=True)
    srv.add_argument("--host", default="127.0.0.1", help="address to bind HTTP and gRPC to")
    srv.add_argument("--http-port", type=int, default=8000)
    srv.add_argument("--grpc-port", type=int, default=9000, help="0 turns gRPC off")
    srv.add_argument("--address", help="join this Ray cluster (auto, HOST:PORT, ray://...)")
    srv.add_argument("--metrics-port", type=int, default=8080, help="Prometheus port of a local Ray")
    srv.set_defaults(handler=lambda args: serve_forever(args.config, args.host, args.http_port, args.grpc_port,
                                                        args.address, args.metrics_port))

    k8s = sub.add_parser("k8s", help="Kubernetes (KubeRay) manifests from an ensemble config")
    k8s.add_argument("action", choices=["render"])
    k8s.add_argument("--config", required=True)
    k8s.add_argument("--image", default="mixserve:latest", help="container image with mixserve and the models")
    k8s.add_argument("--out", help="write here instead of standard output")
    k8s.set_defaults(handler=_render)


def member_weights(text: str) -> dict[str, float]:
    """An argument like a=0.7,b=0.3 (generate's and eval's --weights)."""
    try:
        return {k.strip(): float(v) for k, v in (pair.split("=") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected name=weight pairs like a=0.7,b=0.3 (got {text!r})") from None


def serve_forever(config_path: str, host: str, http_port: int, grpc_port: int, address: str | None,
                  metrics_port: int) -> None:
    config = load_config(config_path)  # config mistakes fail here, before Ray starts
    if address is None:
        # An embedded Ray's ingress inherits this environment: a key variable named but empty fails
        # here, in a second, rather than in the ingress after Ray and the members have started. (A
        # joined cluster's ingress reads its own node's environment, and checks it there.)
        ApiKeys.from_config(config)
    connect(address, metrics_port=metrics_port)
    import ray
    from ray import serve

    from .app import build_app

    serve.start(http_options={"host": host, "port": http_port})
    print(f"loading {len(config.members)} members...", flush=True)
    serve.run(build_app(config, host, grpc_port or None), name="mixserve", route_prefix="/")
    body = f'{{"model": "{config.model_name}", "prompt": "The ocean is", "max_tokens": 32}}'
    print(f"mixserve is up: HTTP http://{host}:{http_port}/v1 (OpenAI-compatible)"
          + (f", gRPC {host}:{grpc_port}" if grpc_port else ""))
    print(f"try: curl -s http://{host}:{http_port}/v1/completions -H 'Content-Type: application/json' "
          f"-d {shlex.quote(body)}")
    if address is None:
        print(f"Prometheus metrics (mixserve_*): http://127.0.0.1:{metrics_port}/metrics")
    print("Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    # Our own handlers: Ray's driver replaces Python's default SIGINT behaviour.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(timeout=1.0):
        pass
    print("shutting down...", flush=True)
    # Drain and delete our app only: serve.shutdown() would stop Serve for a joined cluster's other
    # apps, and its controller's self-kill is reported as a failed task. The embedded Ray (and the
    # Serve instance in it) ends with this driver.
    serve.delete("mixserve")
    ray.shutdown()
    print("stopped.", flush=True)


def _generate(args) -> None:
    from mixserve.router.request import GenerateRequest, check_members, validate

    from .ensemble import build_ensemble

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
    with build_ensemble(config, address=args.address) as ensemble:
        check_members(plan, ensemble.router.infos)
        result = asyncio.run(ensemble.router.generate(plan))
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


def _render(args) -> None:
    import yaml

    from mixserve.cluster.kuberay import manifests, to_yaml

    try:
        raw = yaml.safe_load(open(args.config))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {args.config!r}: {e}") from None
    text = to_yaml(manifests(raw, args.image))
    if args.out:
        open(args.out, "w").write(text)
    else:
        print(text, end="")
