"""Write the built-in multilingual sample corpus (hierpt.data.sample_corpus) for data_prep/sample.yaml.

python data_prep/make_sample_corpus.py                      # ~1.7 MB into data_prep/sample_corpus/
python data_prep/make_sample_corpus.py --train-mb 15 --files-per-language 4 --out /tmp/big
"""

import argparse
from pathlib import Path

from hierpt.data.sample_corpus import write_sample_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "sample_corpus"))
    parser.add_argument("--train-mb", type=float, default=0.15, help="train text per language, MB")
    parser.add_argument("--eval-mb", type=float, default=0.02, help="held-out eval text per language, MB")
    parser.add_argument("--files-per-language", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = write_sample_corpus(
        args.out, int(args.train_mb * 1e6), int(args.eval_mb * 1e6), args.seed, args.files_per_language
    )
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e6:.2f} MB under {args.out}")


if __name__ == "__main__":
    main()
