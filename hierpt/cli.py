"""The `hierpt` command. Each subcommand imports its stage lazily, so `hierpt model-info` stays instant."""

from __future__ import annotations

import argparse
import json
import sys


def _model_info(args: argparse.Namespace) -> None:
    from hierpt.model.hat import HATConfig, build_meta

    counts = build_meta(HATConfig.from_name(args.preset)).num_params()
    if args.json:
        print(json.dumps(counts))
        return
    for name, count in counts.items():
        print(f"{name:>10}  {count:>15,}  ({count / 1e6:,.1f}M)")


def _generate(args: argparse.Namespace) -> None:
    from hierpt.model.export import load_export
    from hierpt.model.generate import SamplingConfig, generate_text

    model = load_export(args.checkpoint)
    sampling = SamplingConfig(max_words=args.max_words, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    print(args.prompt + generate_text(model, args.prompt, sampling))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hierpt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("model-info", help="parameter counts per module of a preset (no weights allocated)")
    info.add_argument("preset")
    info.add_argument("--json", action="store_true", help="one JSON object: encoder, backbone, decoder, total")
    info.set_defaults(run=_model_info)

    gen = commands.add_parser("generate", help="continue a prompt with an exported checkpoint")
    gen.add_argument("--checkpoint", required=True, help="export directory or URL (hierpt export)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-words", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(run=_generate)

    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        # Bad input is the user's to fix: one line, no traceback.
        print(f"hierpt {args.command}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
