"""`python -m demo.diagnose_all RUN --dataset DIR`: `emo diagnose` for every checkpoint of a run folder,
each written to <checkpoint>/diagnose.json; then RUN/diagnosed marks the step as done."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--clips", default=4, show_default=True)
@click.option("--steps", default=10, show_default=True, help="DDIM steps of the generated frames")
def main(run: Path, dataset: str, split: str, clips: int, steps: int) -> None:
    from emo.diagnose import diagnose, summary_lines, write_json
    from emo.fileio import atomic_write

    done = []
    for ckpt in sorted(run.glob("step-*")):
        out = ckpt / "diagnose.json"
        if not out.is_file():          # a rerun keeps the figures already measured
            write_json(diagnose(ckpt, dataset, split=split, n_clips=clips, steps=steps), out)
        done.append(out)
        import json
        for line in summary_lines(json.loads(out.read_text())):
            click.echo("    " + line)
    atomic_write(run / "diagnosed", "\n".join(str(p) for p in done) + "\n")


if __name__ == "__main__":
    main()
