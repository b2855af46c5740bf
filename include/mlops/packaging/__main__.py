"""``python -m mlops.packaging serving|training ...``: build (and push) the images.

``serving --model churn --version 3`` (or ``--version @champion``) builds and pushes the serving image
of a model version and records its digest on it; ``training [--tag ...] [--push]`` builds the training
image of the docker backend. The ``image`` target of the Makefile runs this.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from mlops.packaging.engine import build_and_push, build_training_image
from mlops.packaging.errors import ImageError
from mlops.packaging.record import record_image
from mlops.packaging.refs import DEFAULT_BASE_IMAGE, DEFAULT_REGISTRY, DEFAULT_TRAINING_IMAGE
from mlops.registry.client import mlflow_client

DESCRIPTION = (
    "Container images of the platform: the serving image of a model version, and the training image."
)


def main(argv: list[str] | None = None) -> int:
    """``python -m mlops.packaging serving --model churn --version 3`` | ``training [--tag ...]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m mlops.packaging", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serving", help="build + push the serving image of a model version, record its digest")
    s.add_argument("--model", required=True)
    s.add_argument("--version", required=True, help="model version number (or @alias, e.g. @champion)")
    s.add_argument(
        "--tracking-uri", help="MLflow server (default: MLFLOW_TRACKING_URI, then the local stack)"
    )
    s.add_argument("--registry", help=f"default MLOPS_IMAGE_REGISTRY, then {DEFAULT_REGISTRY}")
    s.add_argument("--no-record", action="store_true", help="do not tag the model version")
    t = sub.add_parser("training", help="build the training image (the docker backend's)")
    t.add_argument("--tag", default=DEFAULT_TRAINING_IMAGE)
    t.add_argument("--push", action="store_true")
    for a in (s, t):
        a.add_argument("--docker-url", help="Docker-API engine (default MLOPS_DOCKER_URL)")
        a.add_argument("--base-image", help=f"default MLOPS_BASE_IMAGE, then {DEFAULT_BASE_IMAGE}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "training":
            ref = build_training_image(
                args.tag, push=args.push, docker_url=args.docker_url, base_image=args.base_image
            )
            print(json.dumps({"image": str(ref)}))
            return 0
        tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            from mlops.config.settings import get_settings

            tracking_uri = get_settings().tracking_uri
        client = mlflow_client(tracking_uri)
        version = args.version
        if version.startswith("@"):
            version = client.get_model_version_by_alias(args.model, version[1:]).version
        ref = build_and_push(
            args.model,
            version,
            tracking_uri=tracking_uri,
            registry=args.registry,
            docker_url=args.docker_url,
            base_image=args.base_image,
        )
        if not args.no_record:
            record_image(client, args.model, version, ref)
        print(
            json.dumps(
                {"model": args.model, "version": str(version), "image": ref.by_digest, "tag": ref.by_tag}
            )
        )
        return 0
    except (ImageError, ValueError) as exc:
        print(f"mlops images: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
