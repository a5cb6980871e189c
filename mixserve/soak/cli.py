"""`mixserve soak`: its arguments; it exits 1 when the oracle finds a problem."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .topology import TOPOLOGIES


def add_command(sub) -> None:
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
    soak.add_argument("--hostile", type=float, default=0.0,
                      help="the share of requests a hostile client sends: bad types, nesting, bounds, overflows "
                           "(mixserve/soak/hostile.py); each must be refused with a 4xx and harm no other")
    soak.add_argument("--topology", choices=TOPOLOGIES, default="single",
                      help="single: the config as written; scaled: 2 router replicas and 2 replicas of each member, "
                           "each fault taking one replica (mixserve/soak/topology.py)")
    soak.add_argument("--availability", action=argparse.BooleanOptionalAction, default=None,
                      help="fail when the fault window's seconds without a completed request pass 5%% or its "
                           "completed requests per second fall below 0.7 of the warm-up's (default: on with "
                           "--topology scaled; one copy of each part cannot meet them)")
    soak.add_argument("--out", default="soak-out", help="directory for soak.json, soak.md, soak.png")
    soak.set_defaults(handler=_soak)


def _soak(args) -> None:
    from .phases import run_soak

    report = run_soak(args.config, args.out, args.duration, args.seed, args.warmup, args.member_kills, args.pauses,
                      args.router_kills, args.workers, args.hostile, args.topology, args.availability)
    print((Path(args.out) / "soak.md").read_text())
    if not report["summary"]["passed"]:
        sys.exit(1)
