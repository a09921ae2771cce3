"""Insert fake clusters into a local SkyPilot 0.14.1 API server's state.

Usage (with the python of the venv made by scripts/setup-venv.sh, and the
same HOME as the running `sky api start` server):

    HOME=/tmp/x python skypilot_fake_clusters.py

SkyPilot's `/status` (with `refresh: NONE`) reads clusters from
`~/.sky/state.db` and derives `nodes`, `accelerators`, `cloud`, `region`
from each cluster's pickled resource handle, so every fake cluster gets a
real `CloudVmRayResourceHandle` (Kubernetes resources with an explicit
instance type, which needs no cloud credentials or catalog download). Users
get records in the `users` table, except the owner of `ghost-l4`: SkyPilot
drops a cluster whose owner has no user record from `/status`, a blind spot
the sync documents.

The workspace `research` must exist in `~/.sky/config.yaml`
(`workspaces: {default: {}, research: {}}`), or `/status` leaves its cluster
out.

Output: the LAST line of stdout is one JSON object
`{"inserted": [names], "users": {hash: name}}`. Exit code 0 on success.
"""

import json
import os
import pickle
import sqlite3
import sys
import time

# user hash -> SkyPilot user name
USERS = {
    'a11ce001': 'alice',
    'b0b00002': 'bob',
    'ca401003': 'carol',
}

# name, status, owner hash, workspace, nodes, accelerators per node
CLUSTERS = [
    ('train-h100', 'UP', 'a11ce001', 'default', 2, {'H100': 8}),
    ('cpu-box', 'UP', 'a11ce001', 'default', 1, None),
    ('idle-a100', 'STOPPED', 'b0b00002', 'default', 1, {'A100': 2}),
    ('frac-t4', 'INIT', 'b0b00002', 'default', 3, {'T4': 0.5}),
    ('research-l4', 'AUTOSTOPPING', 'ca401003', 'research', 1, {'L4': 4}),
    # No user record for dead0000: SkyPilot leaves this one out of /status.
    ('ghost-l4', 'UP', 'dead0000', 'default', 1, {'L4': 1}),
]


def main() -> int:
    import sky  # pylint: disable=import-outside-toplevel
    from sky.backends import cloud_vm_ray_backend  # pylint: disable=import-outside-toplevel

    db = os.path.expanduser('~/.sky/state.db')
    if not os.path.exists(db):
        print(f'no SkyPilot state at {db}; start `sky api start` with this HOME first',
              file=sys.stderr)
        return 1
    now = int(time.time())
    con = sqlite3.connect(db, timeout=30)
    for user_hash, name in USERS.items():
        con.execute(
            'INSERT OR REPLACE INTO users (id, name, created_at, type) '
            "VALUES (?, ?, ?, 'legacy')", (user_hash, name, now))
    for name, status, owner, workspace, nodes, accelerators in CLUSTERS:
        instance_type = '8CPU--32GB'
        if accelerators:
            (model, count), = accelerators.items()
            if count == int(count):
                instance_type += f'--{model}:{int(count)}'
        resources = sky.Resources(infra='kubernetes/fake-context',
                                  instance_type=instance_type,
                                  accelerators=accelerators,
                                  cpus=8,
                                  memory=32)
        handle = cloud_vm_ray_backend.CloudVmRayResourceHandle(
            cluster_name=name,
            cluster_name_on_cloud=f'{name}-{owner[:4]}',
            cluster_yaml=None,
            launched_nodes=nodes,
            launched_resources=resources)
        con.execute(
            'INSERT OR REPLACE INTO clusters (name, launched_at, handle, '
            'last_use, status, autostop, to_down, metadata, cluster_hash, '
            'cluster_ever_up, status_updated_at, user_hash, workspace, '
            'last_creation_command, is_managed, cloud, region) VALUES '
            "(?, ?, ?, ?, ?, -1, 0, '{}', ?, 1, ?, ?, ?, ?, 0, ?, ?)",
            (name, now, pickle.dumps(handle), 'skypilot_fake_clusters.py',
             status, f'{name}-fake-hash', now, owner, workspace,
             'skypilot_fake_clusters.py', str(resources.cloud),
             resources.region))
    con.commit()
    con.close()
    print(json.dumps({'inserted': [c[0] for c in CLUSTERS], 'users': USERS}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
