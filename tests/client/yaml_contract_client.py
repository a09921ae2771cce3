"""The YAML contract through the real SkyPilot 0.14.1 client (a sample).

yaml_contract.py checks Warden's answers with PyYAML directly; this sends
tasks through SkyPilot's own admin-policy code
(`sky.utils.admin_policy_utils.apply`), so SkyPilot's encoding of the
request and its decoding of the answer (JSON in JSON, YAML inside) are
covered too. The tasks are ones SkyPilot accepts, with the values PyYAML
misreads when written unquoted (env values like `1e-4`, `yes`, `1:30`,
`0o17`, dates, control, line-break and non-BMP characters), and
SkyPilot's own `image_id: {null: docker:...}`.

Usage: yaml_contract_client.py --url URL --workdir DIR [--count N] [--seed S]
against `warden serve --config tests/client/yaml-contract.yaml`. Last line
of stdout: `{"checked": N, "failures": [...]}`; exit 1 on any failure.
"""

import argparse
import copy
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skypilot_compat  # noqa: E402  (isolate, Harness)
import yaml_contract  # noqa: E402  (the value corpus, comparison, promises)

EDGY = [
    "1e-4", "1E+4", "yes", "No", "on", "OFF", "y", "1:30", "-1:30:00", "0o17", "0777", "0x1F", "0b101",
    "1_000", ".inf", "-.Inf", ".nan", "null", "~", "", "2024-01-31", "2001-12-14 21:59:43.10 -5", "=", "<<",
    "a: b", "#x", "- x", "[a]", "{b}", "*alias", "&a", "!tag", "|", ">", "'q'", '"dq"', "back\\slash",
    "tab\there", "cr\rlf", "line\nbreak", "nel\x85", "ls\u2028", "ps\u2029", "bom\ufeff", "del\x7f",
    "c1\x9f", "bell\x07", "esc\x1b", "nbsp\xa0", "rocket \U0001F680", "max \U0010FFFD", "fffd \ufffd",
    "é 日本", "trailing ", " leading", "123456789012345678901234567890",
]
GPUS = ["H100", "A100", "L4", "T4"]


def make_task(r, i):
    envs = {}
    for j in range(r.randint(3, 10)):
        envs["E%d_%d" % (i, j)] = r.choice(EDGY) + (r.choice(EDGY) if r.random() < 0.3 else "")
    res = {}
    if r.random() < 0.8:
        res["accelerators"] = r.choice([{r.choice(GPUS): r.choice([1, 2, 8])},
                                        "%s:%d" % (r.choice(GPUS), r.choice([1, 4]))])
    if r.random() < 0.5:
        res["infra"] = r.choice(["aws", "gcp", "aws/us-east-1"])
    if r.random() < 0.3:
        res["use_spot"] = r.choice([True, False])
    if r.random() < 0.5:
        res["labels"] = {"project": r.choice(["alpha", "1e-4", "yes", "0777"])}
    if r.random() < 0.3:
        res["image_id"] = "docker:ubuntu:22.04"
    if r.random() < 0.3:
        res["cpus"] = r.choice(["4+", 8])
    task = {"name": "contract-%d" % i, "resources": res, "envs": envs,
            "run": r.choice(EDGY) + "\necho done\n", "setup": r.choice(EDGY)}
    if r.random() < 0.4:
        task["num_nodes"] = r.choice([1, 2])
    return task


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--seed", type=int, default=20261204)
    args = ap.parse_args()
    skypilot_compat.isolate(args.workdir, args.url)
    import yaml
    h = skypilot_compat.Harness(args.url, args.workdir)
    r = random.Random(args.seed)
    failures = []
    checked = 0
    for i in range(args.count):
        text = yaml.safe_dump(make_task(r, i), sort_keys=False, allow_unicode=r.random() < 0.5)
        try:
            task = h.load_task("t%d" % i, text)
        except Exception as e:  # noqa: BLE001 - SkyPilot refused our own task: a generator bug
            failures.append("task %d: SkyPilot itself refuses it (%s): %r" % (i, e, text[:300]))
            continue
        before = task.to_yaml_config()
        for name in (h.names.CLUSTER_EXEC, h.names.CLUSTER_LAUNCH):
            try:
                returned, config = h.apply(copy.deepcopy(task), name, h.options("c%d" % i), at_client_side=True)
            except Exception as e:  # noqa: BLE001 - any failure is a finding
                failures.append("task %d (%s): %s\n%s" % (i, name, skypilot_compat.plain(e)[:400], text[:600]))
                continue
            after = returned.to_yaml_config()
            want = copy.deepcopy(before)
            want_config = {}
            if name == h.names.CLUSTER_LAUNCH:
                want, want_config = yaml_contract.expected_launch(want, want_config)
            # SkyPilot's Task writes its fields in its own order: compare
            # values and types (yaml_contract.py checks Warden's order).
            diff = yaml_contract.same(want, after, ordered=False)
            if diff:
                failures.append("task %d (%s): %s\n--- sent ---\n%s" % (i, name, diff, text[:800]))
            if name == h.names.CLUSTER_LAUNCH:
                got = dict(config).get("aws", {}).get("use_internal_ips") if config else None
                if got is not True:
                    failures.append("task %d: config aws.use_internal_ips is %r, want True" % (i, got))
            checked += 1
    for f in failures[:20]:
        print("FAIL", f)
    print(json.dumps({"checked": checked, "failures": len(failures)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
