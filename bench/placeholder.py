"""TEMPORARY stand-in for the webhook until `secret-injector serve` lands on main.

A straightforward handler (orjson, uvloop, hand-built add ops) so the harness can be
validated end to end. Removed once the real webhook serves.
"""

from __future__ import annotations

import argparse
import base64
import ssl
from typing import Any

import orjson
import uvloop
from aiohttp import web

PREFIX = "secret-injector.io/"


async def mutate(request: web.Request) -> web.Response:
    try:
        review = orjson.loads(await request.read())
        req = review["request"]
        pod = req["object"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return web.Response(status=400, text="not an AdmissionReview")
    annotations: dict[str, str] = pod["metadata"].get("annotations") or {}
    response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
    if annotations.get(PREFIX + "inject") == "true":
        refs = {
            k: v
            for k, v in annotations.items()
            if k.startswith((PREFIX + "file.", PREFIX + "env."))
        }
        ns = req["namespace"]
        bad = [k for k, v in refs.items() if ns not in v]
        if bad:
            response = {
                "uid": req["uid"],
                "allowed": False,
                "status": {"code": 403, "message": f"allowedRefs: {bad}"},
            }
        else:
            ops: list[dict[str, Any]] = [
                {
                    "op": "add",
                    "path": "/spec/volumes/-",
                    "value": {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io"}},
                },
                {
                    "op": "add",
                    "path": "/metadata/annotations/secret-injector.io~1status",
                    "value": "injected",
                },
            ]
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(orjson.dumps(ops)).decode()
    answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    app = web.Application()
    app.router.add_post("/mutate", mutate)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        ssl_context=context,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
