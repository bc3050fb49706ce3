"""What signatures and the signature gate cost, side by side in one run of the local lab.

One two-platform image (a random layer of --size-mb), signed with cosign on its index and each
platform, with an attestation and an SBOM, is promoted through the operator's own pod, each
variant into its own destination repository: crane (no signatures), regctl with
``with_signatures=False``, regctl with signatures (the default), and regctl with signatures and
the gate (``verify_signature_key``). Printed per variant: task time (and its ratio to crane's),
the copier container's run time, what travelled, and requests that wrote to the destination.
A second pass runs each variant again (everything present). Times on these shared machines are
noisy: read the ratios.

    python bench/signatures.py [--size-mb 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import DEST_ACCOUNT, DEST_HOST, SOURCE_ACCOUNT, SOURCE_HOST
from tests.lab.cosign import Tools
from tests.lab.engine_compare import warm_up
from tests.lab.fixtures import missing_prerequisites
from tests.lab.lab import Lab
from tests.lab.operator_run import lab_operator, run_task

REPO = "bench/signed"


@dataclass
class Row:
    name: str
    task_seconds: float
    copy_seconds: float | None
    travelled: int
    writes: int


def writes(lab: Lab) -> int:
    return sum(1 for r in lab.requests(DEST_ACCOUNT) if r.method in ("POST", "PUT", "PATCH", "DELETE"))


def dest_repository(lab: Lab, name: str) -> str:
    """Each variant's own destination repository, created as ECR needs."""
    repo = f"{REPO}-{name.replace(' ', '-').replace('+', '-')}"
    lab.create_repository(DEST_ACCOUNT, repo)
    return repo


def promote(lab: Lab, name: str, tag: str, engine: str, **kwargs: Any) -> Row:
    assert lab.images is not None
    operator = lab_operator(
        lab,
        engine,
        task_id=f"promote_{name.replace(' ', '_').replace('+', '_')}",
        source_image=f"{SOURCE_HOST}/{REPO}:{tag}",
        dest_image=f"{DEST_HOST}/{dest_repository(lab, name)}:{tag}",
        cosign_image=lab.images.cosign,
        **kwargs,
    )
    before = writes(lab)
    run = run_task(lab, task=operator)
    if run.error is not None:
        raise RuntimeError(f"{name}: the promotion failed: {run.error}")
    travelled = len(run.result.get("cosign_tags", [])) + len(run.result.get("referrers", []))
    return Row(name, run.seconds, run.copier_seconds, travelled, writes(lab) - before)


def table(rows: list[Row]) -> str:
    header = ["variant", "task time", "copier time", "artifacts travelled", "writes at destination"]
    first = rows[0].task_seconds
    lines = [
        [
            r.name,
            f"{r.task_seconds:.1f} s ({r.task_seconds / first:.2f}x)",
            f"{r.copy_seconds:.1f} s" if r.copy_seconds is not None else "?",
            str(r.travelled),
            str(r.writes),
        ]
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="repeat with fresh tags; every round printed")
    parser.add_argument("--batch-tags", type=int, default=10, help="tags of the batch comparison (0: none)")
    args = parser.parse_args(argv)
    problems = missing_prerequisites()
    if problems:
        print(f"bench: cannot start the lab: {'; '.join(problems)}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="ecr-promote-bench-") as state, Lab(state) as lab:
        tools = Tools(lab, Path(state) / "cosign")
        key = tools.key_pair("bench")
        warm_up(lab)
        for round_no in range(1, args.rounds + 1):
            tag = f"bench-{round_no}"
            lab.push_image(SOURCE_ACCOUNT, REPO, tag, extra_mb=args.size_mb, seed=500 + round_no)
            source = f"{SOURCE_HOST}/{REPO}:{tag}"
            tools.sign(source, key, SOURCE_ACCOUNT)
            tools.attest(source, key, SOURCE_ACCOUNT, {"bench": round_no})
            tools.attach_sbom(source, SOURCE_ACCOUNT)
            variants: list[tuple[str, str, dict[str, Any]]] = [
                ("crane", "crane", {}),
                ("regctl", "regctl", {"with_signatures": False}),
                ("regctl+signatures", "regctl", {}),
                ("regctl+signatures+gate", "regctl", {"verify_signature_key": key.public_pem}),
            ]
            for label in ("first promotion", "again (everything present)"):
                rows = [promote(lab, name, tag, engine, **kwargs) for name, engine, kwargs in variants]
                print(
                    f"\nround {round_no}, {label}: {args.size_mb} MB random layer, linux/amd64 + "
                    "linux/arm64, signed (index and both platforms), an attestation and an SBOM"
                )
                print(table(rows))
        if args.batch_tags:
            batch(lab, tools, key, args.batch_tags)
    return 0


def batch(lab: Lab, tools: Tools, key: Any, count: int) -> None:
    """One pod for ``count`` signed tags (1 MB each), regctl without and with signatures: with
    them, each copy also lists the destination's tags and asks for each digest's referrers."""
    tags = [f"batch-{i}" for i in range(count)]
    for i, tag in enumerate(tags):
        lab.push_image(SOURCE_ACCOUNT, REPO, tag, extra_mb=1, seed=600 + i)
        tools.sign(f"{SOURCE_HOST}/{REPO}:{tag}", key, SOURCE_ACCOUNT)
    rows = []
    for name, with_signatures in (("regctl batch", False), ("regctl batch+signatures", True)):
        before = writes(lab)
        run = run_task(
            lab,
            task=lab_operator(
                lab,
                "regctl",
                task_id=name.replace(" ", "_").replace("+", "_"),
                source_image=f"{SOURCE_HOST}/{REPO}",
                dest_image=f"{DEST_HOST}/{dest_repository(lab, name)}",
                tags=tags,
                with_signatures=with_signatures,
            ),
        )
        if run.error is not None:
            raise RuntimeError(f"{name}: the promotion failed: {run.error}")
        travelled = sum(len(p.get("cosign_tags", [])) for p in run.result["promotions"])
        rows.append(Row(name, run.seconds, run.copier_seconds, travelled, writes(lab) - before))
    print(f"\na batch of {count} signed tags (1 MB random layer each, two platforms), parallel=4")
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
