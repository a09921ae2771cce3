#!/usr/bin/env python3
"""FastAPI baseline for the Warden benchmark.

A RESTful admin-policy server written on SkyPilot's public ``sky.AdminPolicy``
API, following the pattern of SkyPilot's own
``examples/admin_policy/example_server/policy_server.py``: decode the request
with ``sky.UserRequest.decode``, run the policy classes in order, answer with
``sky.MutatedUserRequest(...).encode()`` (HTTP 400 with the message when a
policy raises).

The policy is the one ``bench/policy.yaml`` gives Warden:
  * every resource with accelerators gets ``use_spot: true``;
  * every resource gets the label ``managed-by: warden``.

Run (bench/run.sh does this):
    python bench/fastapi_policy_server.py --host 127.0.0.1 --port 18083 \
        --workers 1
"""

import argparse
import os
from typing import List, Type

from fastapi import FastAPI
from fastapi import Request
from fastapi.responses import JSONResponse
import uvicorn

import sky

app = FastAPI(title='Warden bench: FastAPI admin policy server',
              version='1.0.0')


class UseSpotForGpuPolicy(sky.AdminPolicy):
    """Use spot instances for every resource that asks for accelerators."""

    @classmethod
    def validate_and_mutate(
            cls, user_request: sky.UserRequest) -> sky.MutatedUserRequest:
        task = user_request.task
        new_resources = []
        for r in task.resources:
            if r.accelerators:
                new_resources.append(r.copy(use_spot=True))
            else:
                new_resources.append(r)
        task.set_resources(type(task.resources)(new_resources))
        return sky.MutatedUserRequest(
            task=task, skypilot_config=user_request.skypilot_config)


class ManagedByLabelPolicy(sky.AdminPolicy):
    """Add the label ``managed-by: warden`` to every resource."""

    @classmethod
    def validate_and_mutate(
            cls, user_request: sky.UserRequest) -> sky.MutatedUserRequest:
        task = user_request.task
        new_resources = []
        for r in task.resources:
            labels = dict(r.labels or {})
            labels['managed-by'] = 'warden'
            new_resources.append(r.copy(labels=labels))
        task.set_resources(type(task.resources)(new_resources))
        return sky.MutatedUserRequest(
            task=task, skypilot_config=user_request.skypilot_config)


POLICIES: List[Type[sky.AdminPolicy]] = [
    UseSpotForGpuPolicy,
    ManagedByLabelPolicy,
]


@app.post('/skypilot')
async def apply_policy(request: Request) -> JSONResponse:
    """Apply the admin policies to a user request."""
    # The body is a JSON string literal whose content is the request object.
    json_data = await request.json()
    try:
        user_request = sky.UserRequest.decode(json_data)
        mutated_request = sky.MutatedUserRequest(
            task=user_request.task,
            skypilot_config=user_request.skypilot_config)
        for policy in POLICIES:
            mutated_request = policy.validate_and_mutate(user_request)
            user_request.task = mutated_request.task
            user_request.skypilot_config = mutated_request.skypilot_config
    except Exception as e:  # pylint: disable=broad-except
        return JSONResponse(content=str(e), status_code=400)
    return JSONResponse(content=mutated_request.encode())


@app.get('/healthz')
async def healthz() -> JSONResponse:
    return JSONResponse(content='ok')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=18083)
    parser.add_argument('--workers', type=int, default=1)
    args = parser.parse_args()
    # With workers > 1 uvicorn needs the app as an import string; app_dir puts
    # this file's directory on sys.path so it works from any working dir.
    uvicorn.run('fastapi_policy_server:app' if args.workers > 1 else app,
                app_dir=os.path.dirname(os.path.abspath(__file__)),
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level='warning',
                access_log=False)


if __name__ == '__main__':
    main()
