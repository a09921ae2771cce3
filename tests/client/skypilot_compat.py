"""Drive the real SkyPilot 0.14.1 client against a running Warden.

Usage (with the python of the venv made by scripts/setup-venv.sh):

    python skypilot_compat.py --url http://127.0.0.1:PORT/skypilot --workdir DIR

Each scenario goes through SkyPilot's own admin-policy code path,
`sky.utils.admin_policy_utils.apply(...)`, which selects SkyPilot's RESTful
policy client because the config's `admin_policy` is a URL. The checks look
at what SkyPilot itself returns, i.e. what it would go on to launch.

The policy the scenarios assume is tests/client/skypilot-compat.yaml.

Output: human-readable progress (SkyPilot prints its own lines too), then as
the LAST line of stdout one JSON object
`{"passed": [names], "failed": [{"name": ..., "reason": ...}]}`.
Exit code 0 iff every scenario passed.
"""

import argparse
import copy
import getpass
import json
import os
import re
import sys
import time
import traceback

# Substrings Warden's rejection messages must contain. Keep in step with the
# server's wording.
MAX_GPUS_RULE = 'team.max_gpus_per_launch'
MAX_GPUS_PHRASE = 'at most 16'
UNRESOLVED_PHRASE = 'is not in any team'
# A viewer (bound in role_bindings) may not launch: the built-in `access`.
VIEWER = 'fay'
VIEWER_PHRASE = '`fay` is `viewer` in team `ml`'

# What tests/client/skypilot-compat.yaml says.
TEAM = 'ml'
# SkyPilot names the user from $SKYPILOT_USER, falling back to the OS user;
# on a real API server the client sends its user name the same way. Pinning
# it keeps the run independent of who runs the tests.
POLICY_USER = 'root'
# A workspace no team claims: server-side requests must resolve by user
# name, client-side ones (no user) must stay unresolved.
UNCLAIMED_WORKSPACE = 'nobody-ws'
TEAM_LABELS = {'team': TEAM, 'managed-by': 'warden'}
K8S_APP_LABEL_PATH = ('kubernetes', 'custom_metadata', 'labels', 'app')
K8S_APP_LABEL = 'skypilot'

GPU_TASK = """\
name: warden-compat-gpu
resources:
  infra: aws
  accelerators:
    H100: 8
run: nvidia-smi
"""

OVERSIZED_GPU_TASK = """\
name: warden-compat-oversized
resources:
  infra: aws
  accelerators:
    H100: 64
run: nvidia-smi
"""

# GPU task with labels, none of them `team`.
UNRESOLVED_GPU_TASK = """\
name: warden-compat-unresolved
resources:
  accelerators:
    A100: 2
  labels:
    project: alpha
run: nvidia-smi
"""

CPU_TASK = """\
name: warden-compat-cpu
resources:
  cpus: 4+
envs:
  FOO: bar
  WARDEN_COMPAT: "1"
setup: pip list
run: echo "$FOO"
"""

_ANSI = re.compile(r'\x1b\[[0-9;]*m')


class Failure(Exception):
    """A scenario's expectation did not hold; the message says which."""


def log(msg):
    print(f'[skypilot-compat] {msg}', flush=True)


def expect(cond, reason):
    if not cond:
        raise Failure(reason)


def plain(text):
    return _ANSI.sub('', str(text))


def get_path(mapping, path):
    node = mapping
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def diff(before, after, path=''):
    """Leaf-level differences between two YAML-ish values, as strings."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in list(before) + [k for k in after if k not in before]:
            sub = f'{path}.{key}' if path else str(key)
            if key not in after:
                out.append(f'{sub}: removed (was {before[key]!r})')
            elif key not in before:
                out.append(f'{sub}: added {after[key]!r}')
            else:
                out.extend(diff(before[key], after[key], sub))
        return out
    if before != after:
        return [f'{path or "<root>"}: {before!r} -> {after!r}']
    return []


def without_policy_additions(task_config, drop_use_spot):
    """A task config minus what the policy is expected to add."""
    out = copy.deepcopy(task_config)
    res = out.get('resources')
    if isinstance(res, dict):
        if drop_use_spot:
            res.pop('use_spot', None)
        labels = res.get('labels')
        if isinstance(labels, dict):
            for key, value in TEAM_LABELS.items():
                if labels.get(key) == value:
                    del labels[key]
            if not labels:
                del res['labels']
    return out


def isolate(workdir, url):
    """Point SkyPilot at a private HOME and config. Must run before `import sky`."""
    workdir = os.path.abspath(workdir)
    home = os.path.join(workdir, 'home')
    os.makedirs(home, exist_ok=True)
    config_path = os.path.join(workdir, 'sky-config.yaml')
    with open(config_path, 'w', encoding='utf-8') as f:
        # JSON strings are valid YAML scalars, so this quotes safely.
        f.write(f'admin_policy: {json.dumps(url)}\n'
                f'active_workspace: {json.dumps(UNCLAIMED_WORKSPACE)}\n')
    # Inherited SkyPilot settings (another config, a project config, an API
    # server endpoint, server mode) would leak into the run.
    for name in list(os.environ):
        if name.startswith('SKYPILOT_') or name == 'IS_SKYPILOT_SERVER':
            del os.environ[name]
    os.environ['HOME'] = home
    os.environ['SKYPILOT_DISABLE_USAGE_COLLECTION'] = '1'
    os.environ['SKYPILOT_GLOBAL_CONFIG'] = config_path
    os.environ['SKYPILOT_USER'] = POLICY_USER
    # SkyPilot's policy client uses `requests`, which would send even
    # 127.0.0.1 through an HTTP(S)_PROXY from the environment.
    for name in ('NO_PROXY', 'no_proxy'):
        hosts = [h for h in os.environ.get(name, '').split(',') if h]
        os.environ[name] = ','.join(hosts + ['127.0.0.1', 'localhost'])
    # SkyPilot also reads ./.sky.yaml as a project config.
    os.chdir(workdir)
    return workdir


class Harness:
    def __init__(self, url, workdir):
        # Imported here: SkyPilot reads its environment at import time.
        import sky
        from sky import admin_policy
        from sky import exceptions
        from sky.server.requests import request_names
        from sky.utils import admin_policy_utils
        from sky.utils import common_utils

        self.sky = sky
        self.url = url
        self.workdir = workdir
        self.exceptions = exceptions
        self.names = request_names.AdminPolicyRequestName
        self.RequestOptions = admin_policy.RequestOptions
        self.admin_policy_utils = admin_policy_utils
        self.skypilot_user = common_utils.get_current_user().name
        self.sky_user = lambda: common_utils.get_current_user().name

    def load_task(self, name, yaml_text):
        """Write a task file like a user would and load it like `sky launch`."""
        tasks = os.path.join(self.workdir, 'tasks')
        os.makedirs(tasks, exist_ok=True)
        path = os.path.join(tasks, f'{name}.yaml')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(yaml_text)
        return self.sky.Task.from_yaml(path)

    def options(self, cluster_name):
        return self.RequestOptions(cluster_name=cluster_name,
                                   idle_minutes_to_autostop=None,
                                   down=False,
                                   dryrun=True)

    def apply(self, task, request_name, request_options, at_client_side):
        dag, config = self.admin_policy_utils.apply(
            task,
            request_name=request_name,
            request_options=request_options,
            at_client_side=at_client_side)
        expect(len(dag.tasks) == 1,
               f'expected 1 task back, got {len(dag.tasks)}')
        return dag.tasks[0], config

    def expect_rejection(self, task, request_name, request_options,
                         at_client_side, substrings):
        try:
            returned, _ = self.apply(task, request_name, request_options,
                                     at_client_side)
        except self.exceptions.UserRequestRejectedByPolicy as e:
            msg = plain(e)
            if ('Failed to call admin policy' in msg or
                    'Failed to decode response' in msg):
                raise Failure('the policy call failed instead of rejecting '
                              f'the request: {msg}') from None
            missing = [s for s in substrings if s not in msg]
            expect(not missing,
                   f'rejection message lacks {missing}: {msg}')
            log(f'rejected as expected: {msg}')
            return
        raise Failure('the request was accepted; expected a rejection '
                      f'mentioning {substrings}; SkyPilot got back '
                      f'{returned.to_yaml_config()!r}')


def scenario_mutation(h):
    """Server-side launch of H100:8 by the team's user gets the team's rules."""
    task = h.load_task('mutation', GPU_TASK)
    before = task.to_yaml_config()
    returned, config = h.apply(task, h.names.CLUSTER_LAUNCH,
                               h.options('warden-compat-mutation'),
                               at_client_side=False)
    after = returned.to_yaml_config()
    log(f'task SkyPilot continues with: {after!r}')
    res = after.get('resources')
    expect(isinstance(res, dict),
           f'resources is not a single mapping: {res!r}')
    expect(res.get('use_spot') is True,
           f'resources.use_spot is {res.get("use_spot")!r}, want True')
    labels = res.get('labels') or {}
    for key, value in TEAM_LABELS.items():
        expect(labels.get(key) == value,
               f'resources.labels.{key} is {labels.get(key)!r}, '
               f'want {value!r} (labels: {labels!r})')
    # The Resources objects SkyPilot would optimise over agree.
    for r in returned.resources:
        expect(r.use_spot is True, f'Resources {r!r} has use_spot False')
        expect(all((r.labels or {}).get(k) == v
                   for k, v in TEAM_LABELS.items()),
               f'Resources {r!r} lacks labels {TEAM_LABELS!r}')
    changed = diff(before, without_policy_additions(after, True))
    expect(not changed,
           f'task changed beyond use_spot and team labels: {changed}')

    config = dict(config)
    log(f'config SkyPilot continues with: {config!r}')
    app = get_path(config, K8S_APP_LABEL_PATH)
    expect(app == K8S_APP_LABEL,
           f'config {".".join(K8S_APP_LABEL_PATH)} is {app!r}, '
           f'want {K8S_APP_LABEL!r}')
    expect(config.get('admin_policy') == h.url,
           f'config admin_policy is {config.get("admin_policy")!r}, '
           f'want the user\'s {h.url!r}')
    expect(config.get('active_workspace') == UNCLAIMED_WORKSPACE,
           f'config active_workspace is {config.get("active_workspace")!r}, '
           f'want the user\'s {UNCLAIMED_WORKSPACE!r}')


def scenario_rejection(h):
    """Server-side launch over the team's per-launch GPU cap is rejected."""
    task = h.load_task('rejection', OVERSIZED_GPU_TASK)
    h.expect_rejection(task, h.names.CLUSTER_LAUNCH,
                       h.options('warden-compat-rejection'),
                       at_client_side=False,
                       substrings=[MAX_GPUS_RULE, MAX_GPUS_PHRASE])


def scenario_viewer(h):
    """Server-side launch by a user bound as a viewer is rejected by role."""
    task = h.load_task('viewer', GPU_TASK)
    previous = os.environ.get('SKYPILOT_USER')
    os.environ['SKYPILOT_USER'] = VIEWER
    try:
        expect(h.sky_user() == VIEWER,
               f'SkyPilot names the user {h.sky_user()!r}, want {VIEWER!r}')
        h.expect_rejection(task, h.names.CLUSTER_LAUNCH,
                           h.options('warden-compat-viewer'),
                           at_client_side=False,
                           substrings=['[access]', VIEWER_PHRASE,
                                       'may create launch'])
    finally:
        if previous is None:
            os.environ.pop('SKYPILOT_USER', None)
        else:
            os.environ['SKYPILOT_USER'] = previous


def scenario_unresolved(h):
    """Client-side launch (no user) in an unclaimed workspace, no team label."""
    task = h.load_task('unresolved', UNRESOLVED_GPU_TASK)
    h.expect_rejection(task, h.names.CLUSTER_LAUNCH,
                       h.options('warden-compat-unresolved'),
                       at_client_side=True,
                       substrings=[UNRESOLVED_PHRASE])


def scenario_passthrough(h):
    """A CPU task validated server-side comes back unchanged in substance."""
    task = h.load_task('passthrough', CPU_TASK)
    before = task.to_yaml_config()
    returned, _ = h.apply(task, h.names.VALIDATE,
                          h.options('warden-compat-passthrough'),
                          at_client_side=False)
    after = returned.to_yaml_config()
    log(f'task SkyPilot continues with: {after!r}')
    res = after.get('resources')
    expect(isinstance(res, dict),
           f'resources is not a single mapping: {res!r}')
    expect('use_spot' not in res,
           f'use_spot was set on a CPU-only task: {res!r}')
    for r in returned.resources:
        expect(r.use_spot is False, f'Resources {r!r} has use_spot True')
    for key in ('envs', 'setup', 'run'):
        expect(after.get(key) == before.get(key),
               f'{key} is {after.get(key)!r}, want {before.get(key)!r}')
    # Team labels may be added (the team-labels rule applies to every
    # request); nothing else may change.
    changed = diff(before, without_policy_additions(after, False))
    expect(not changed, f'task changed beyond team labels: {changed}')


SCENARIOS = [
    ('mutation', scenario_mutation),
    ('rejection', scenario_rejection),
    ('viewer', scenario_viewer),
    ('unresolved', scenario_unresolved),
    ('passthrough', scenario_passthrough),
]


def finish(passed, failed):
    sys.stderr.flush()
    print(json.dumps({'passed': passed, 'failed': failed}), flush=True)
    return 0 if not failed and len(passed) == len(SCENARIOS) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--url', required=True,
                        help='Warden\'s SkyPilot door, e.g. '
                        'http://127.0.0.1:8080/skypilot')
    parser.add_argument('--workdir', required=True,
                        help='scratch directory (HOME, config, task files)')
    args = parser.parse_args()

    os_user = getpass.getuser()
    workdir = isolate(args.workdir, args.url)
    started = time.monotonic()
    try:
        h = Harness(args.url, workdir)
    except Exception as e:  # pylint: disable=broad-except
        traceback.print_exc()
        return finish([], [{
            'name': 'setup',
            'reason': f'importing SkyPilot failed: {type(e).__name__}: '
                      f'{plain(e)}'
        }])
    log(f'skypilot {h.sky.__version__} imported in '
        f'{time.monotonic() - started:.1f}s; policy URL {args.url}')
    log(f'SkyPilot user name: {h.skypilot_user!r} (OS user {os_user!r})')

    passed, failed = [], []
    for name, run in SCENARIOS:
        log(f'--- {name}: {run.__doc__}')
        t0 = time.monotonic()
        try:
            run(h)
        except Failure as e:
            failed.append({'name': name, 'reason': str(e)})
        except Exception as e:  # pylint: disable=broad-except
            traceback.print_exc()
            failed.append({
                'name': name,
                'reason': f'unexpected {type(e).__name__}: {plain(e)}'
            })
        else:
            passed.append(name)
        took = time.monotonic() - t0
        if failed and failed[-1]['name'] == name:
            log(f'FAIL {name} ({took:.2f}s): {failed[-1]["reason"]}')
        else:
            log(f'PASS {name} ({took:.2f}s)')
    log(f'{len(passed)} passed, {len(failed)} failed')
    return finish(passed, failed)


if __name__ == '__main__':
    sys.exit(main())
