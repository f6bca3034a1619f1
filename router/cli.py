"""`routerctl`: check a cluster config, prepare models, run tuning experiments."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _check(args: argparse.Namespace) -> int:
    from router.validate import ConfigError, check_serve_config, load_serve_config

    try:
        configs = check_serve_config(load_serve_config(args.file), require_prepared=args.require_prepared)
    except ConfigError as e:
        if args.json:
            print(json.dumps({"ok": False, "problems": e.problems}))
        else:
            print(f"{args.file}: invalid", file=sys.stderr)
            for p in e.problems:
                print(f"  {p}", file=sys.stderr)
        return 1
    summary = [
        {"models": [m.id for m in c.models], "providers": [p.id for p in c.providers], "policy": c.policy.name}
        for c in configs
    ]
    if args.json:
        print(json.dumps({"ok": True, "apps": summary}))
    else:
        for s in summary:
            print(f"{args.file}: ok — models {s['models']}, providers {s['providers']}, policy {s['policy']}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from deployments.prepare import ModelSourceError, prepare
    from router.validate import ConfigError, check_serve_config, load_serve_config

    try:
        configs = check_serve_config(load_serve_config(args.file))
    except ConfigError as e:
        print(f"{args.file}: invalid", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    results = []
    for cfg in configs:
        for m in cfg.models:  # the router's entries hold every model's engine part, own app or not
            cache_dir = m.cache_dir or cfg.cache_dir
            cache = Path(cache_dir).expanduser() if cache_dir else None
            try:
                path = prepare(m.id, m.source, cache, force=args.force)
            except ModelSourceError as e:
                print(f"{m.id}: {e}", file=sys.stderr)
                return 1
            results.append({"id": m.id, "source": m.source, "path": path})
            if not args.json:
                print(f"{m.id}: ready at {path}")
    if args.json:
        print(json.dumps({"models": results}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routerctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a cluster config (Serve schema + router args)")
    check.add_argument("file", help="Serve config file, e.g. cluster.yaml")
    check.add_argument("--require-prepared", action="store_true", help="also fail on unprepared models")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(func=_check)

    prep = sub.add_parser("prepare-models", help="resolve and convert every model of a config (cached)")
    prep.add_argument("file", help="Serve config file, e.g. cluster.yaml")
    prep.add_argument("--force", action="store_true", help="convert again even if cached")
    prep.add_argument("--json", action="store_true", help="print the prepared paths as JSON")
    prep.set_defaults(func=_prepare)

    try:
        from policies.tuning.cli import register
    except ImportError:  # the tuning lab's optional deps are missing
        pass
    else:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
