"""The SkyPilot door's YAML contract, checked against the real PyYAML.

Contract: what SkyPilot's loader (PyYAML `safe_load_all(...)[0]`, with the
libyaml `CSafeLoader` when present, as `sky.utils.yaml_utils` does) reads
from Warden's answer is exactly what it reads from the user's document,
except on the paths Warden's rules govern, which hold exactly the promised
values.

Generates tasks and configs (scalars of every YAML 1.1 type and edge, keys
of every kind, control, line-break and non-BMP characters, aliases, deep
nesting, every SkyPilot task field), dumps them as SkyPilot's client does
(its LineBreakDumper), sends them to a running `warden serve` (config
tests/client/yaml-contract.yaml) as `exec` (a policy that changes nothing)
and as `launch` (a policy that changes several fields), loads the answer
and compares, key order and types included. A share of the documents has
a governed field of a wrong type or value, or nests too deep: those must
be refused with a 4xx naming the field.

Usage: yaml_contract.py URL [COUNT] [SEED]   (WORKERS=2 processes)
Prints failures (at most 20, with the seed and index to reproduce), then a
JSON summary as its last line; exit 1 on any failure.
"""

import datetime
import http.client
import json
import math
import multiprocessing
import os
import random
import sys
import urllib.parse

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineBreakDumper(yaml.SafeDumper):
    """SkyPilot's dumper (sky/utils/yaml_utils.py)."""

    def write_line_break(self, data=None):
        super().write_line_break(data)
        if len(self.indents) == 1:
            super().write_line_break()


def load(text, loader=LOADER):
    docs = list(yaml.load_all(text, Loader=loader))
    return docs[0] if docs else {}


# --- generation -----------------------------------------------------------

WORDS = [
    "", " ", "plain", "two words", " lead", "trail ", "a: b", "a:b", "#x", "x #y", "- x", "-", "?", "? x",
    ":", ": x", "[a]", "{b}", "a,b", "*alias", "&anchor", "!tag", "|pipe", ">fold", "%pct", "@at", "`tick",
    "'quote", '"dq', "back\\slash", "it's", "null", "Null", "NULL", "~", "true", "True", "FALSE", "yes", "No",
    "on", "OFF", "y", "n", "Y", "N", "0", "-0", "+0", "00", "0123", "0o17", "0x1F", "0xfg", "0b101", "0b2",
    "1_000", "1__0", "_1", "1e3", "1e-4", "1E+4", "1.0e+4", "1.5e-4", "1.", ".5", "._5", "+.5", "1:30",
    "-1:30:00", "1:60", "1:30.5", ".inf", "-.Inf", "+.INF", ".nan", ".NaN", "inf", "nan", "Infinity",
    "2024-01-31", "2024-1-1 1:00:00", "2001-12-14t21:59:43.10-05:00", "2024-01-31T12:00:00Z",
    "123456789012345678901234567890", "=", "<<", "H100:8", "A100-80GB:0.5", "aws/us-east-1/us-east-1a",
    "4+", "32GB", "echo $HOME && nvidia-smi", "http://127.0.0.1:8080/x", "docker:ubuntu:22.04",
]
SPECIAL_CHARS = [
    "\t", "\n", "\r", "\r\n", "\x00", "\x01", "\x07", "\x1b", "\x7f", "\x80", "\x85", "\x9f", "\xa0",
    "\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0001F680", "\U00010000", "\U0010FFFD",
    "é", "日本", "\\", '"', "'", "#", ":", " ", "  ",
]
GPUS = ["H100", "A100", "A100-80GB", "L4", "T4", "A10G", "V100", "L40S"]


def rand_str(r):
    c = r.random()
    if c < 0.45:
        return r.choice(WORDS)
    if c < 0.75:
        return "".join(r.choice(WORDS + SPECIAL_CHARS) for _ in range(r.randint(1, 4)))
    if c < 0.85:
        return "".join(chr(r.randint(0x20, 0x7E)) for _ in range(r.randint(1, 12)))
    if c < 0.95:
        return "".join(chr(r.choice([r.randint(0, 0x7F), r.randint(0x80, 0x2FFF), r.randint(0x10000, 0x10FFFF)]))
                       for _ in range(r.randint(1, 6))).replace("\ud800", "")
    return r.choice(WORDS) + "\n" + r.choice(WORDS) + r.choice(["", "\n", "\n\n"])


def safe_str(s):
    # Python strings holding lone surrogates cannot be encoded; drop them.
    return "".join(c for c in s if not 0xD800 <= ord(c) <= 0xDFFF)


def rand_scalar(r):
    c = r.random()
    if c < 0.45:
        return safe_str(rand_str(r))
    if c < 0.6:
        return r.choice([0, 1, -1, 7, 8, 2 ** 31, -(2 ** 63), 2 ** 64 + 3, 10 ** 30, 1234567])
    if c < 0.75:
        return r.choice([0.0, -0.0, 0.5, 1.5, -2.25, 1e-4, 1e20, 3.0, 1e-300, 123456.789, float("inf"),
                         float("-inf"), float("nan")])
    if c < 0.85:
        return r.choice([True, False, None])
    if c < 0.92:
        return r.choice([datetime.date(2024, 1, 31), datetime.datetime(2001, 12, 14, 21, 59, 43, 100000),
                         datetime.datetime(2024, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)])
    return safe_str(rand_str(r)).encode("utf-8")[:8]


def rand_key(r):
    c = r.random()
    if c < 0.7:
        return safe_str(rand_str(r))
    if c < 0.8:
        return r.choice([None, True, False])
    if c < 0.9:
        return r.choice([0, 1, -5, 8080, 2 ** 40, 1.5, -0.25])
    return r.choice([datetime.date(2024, 1, 31), "key"])


def rand_node(r, depth, shared):
    c = r.random()
    if depth <= 0 or c < 0.45:
        return rand_scalar(r)
    if c < 0.5 and shared:
        return r.choice(shared)  # dumped as an anchor and an alias
    if c < 0.75:
        node = {}
        for _ in range(r.randint(0, 4)):
            node[rand_key(r)] = rand_node(r, depth - 1, shared)
    else:
        node = [rand_node(r, depth - 1, shared) for _ in range(r.randint(0, 4))]
    if r.random() < 0.1:
        shared.append(node)
    return node


def deep(r, levels):
    node = rand_scalar(r)
    for _ in range(levels):
        node = [node] if r.random() < 0.5 else {rand_key(r): node}
    return node


def accelerators(r):
    c = r.random()
    count = lambda: r.choice([1, 2, 8, 0.5, 16, "4"])
    if c < 0.3:
        return "%s:%s" % (r.choice(GPUS), r.choice([1, 2, 8, "0.5"]))
    if c < 0.4:
        return r.choice(GPUS)
    if c < 0.7:
        return {g: count() for g in r.sample(GPUS, r.randint(1, 3))}
    if c < 0.85:
        return ["%s:%s" % (g, r.choice([1, 8])) for g in r.sample(GPUS, r.randint(1, 3))]
    return [{g: count()} for g in r.sample(GPUS, r.randint(1, 2))]


def resource_fields(r, shared, alt=False):
    res = {}
    fields = ["accelerators", "cloud", "infra", "region", "use_spot", "cpus", "memory", "disk_size",
              "image_id", "ports", "labels", "autostop", "job_recovery", "disk_tier", "network_tier",
              "instance_type", "extra"]
    for f in r.sample(fields, r.randint(0, 8)):
        if f == "accelerators":
            res[f] = accelerators(r)
        elif f in ("cloud", "region"):
            res[f] = r.choice(["aws", "gcp", "kubernetes", "us-east-1", None])
        elif f == "infra":
            res[f] = r.choice(["aws", "gcp/us-central1", "k8s/ctx", "slurm/c/p", None])
        elif f == "use_spot":
            res[f] = r.choice([True, False, None])
        elif f in ("cpus", "memory"):
            res[f] = r.choice(["4+", 8, 0.5, "32GB", "16+", None])
        elif f == "disk_size":
            res[f] = r.choice([100, 256, "512", None])
        elif f == "image_id":
            res[f] = r.choice(["docker:ubuntu:22.04", {None: "docker:ubuntu:22.04"},
                               {"us-east-1": "ami-1"}, None])
        elif f == "ports":
            res[f] = r.choice([8080, "8080-8090", [8080, "9000"], None])
        elif f == "labels":
            res[f] = r.choice([None, {}, {safe_str(rand_str(r)): safe_str(rand_str(r)) for _ in range(r.randint(1, 3))},
                               {"team": "t"}, {"team": "other", "cost-center": "ml"}])
        elif f == "autostop":
            res[f] = r.choice([None, True, False, 10, "30m", "2h", {"idle_minutes": 30, "down": True}])
        else:
            res[f] = rand_node(r, 2, shared)
    return res


def task(r):
    shared = []
    t = {}
    fields = ["name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup", "run",
              "volumes", "config", "service", "extra", "deep", "_user_specified_yaml"]
    for f in r.sample(fields, r.randint(1, len(fields))):
        if f == "num_nodes":
            t[f] = r.choice([1, 2, 4, None])
        elif f == "resources":
            res = resource_fields(r, shared)
            if r.random() < 0.3:
                res[r.choice(["any_of", "ordered"])] = [resource_fields(r, shared, True)
                                                       for _ in range(r.randint(0, 3))]
            t[f] = r.choice([res, res, res, None])
        elif f in ("envs", "secrets"):
            t[f] = {safe_str(rand_str(r)) or "K": rand_scalar(r) for _ in range(r.randint(0, 5))}
        elif f == "volumes":
            t[f] = r.choice([{}, {"/mnt/data": "pvc0"}, None])
        elif f in ("name", "workdir", "setup", "run"):
            t[f] = safe_str(rand_str(r))
        elif f == "deep":
            t[f] = deep(r, r.randint(1, 40))
        elif f == "_user_specified_yaml":
            t[f] = yaml.dump({"a": rand_scalar(r)}, Dumper=LineBreakDumper, sort_keys=False)
        else:
            t[f] = rand_node(r, 4, shared)
    for _ in range(r.randint(0, 2)):
        t[rand_key(r)] = rand_node(r, 3, shared)
    return t


def config(r):
    shared = []
    c = {}
    for f in r.sample(["admin_policy", "active_workspace", "aws", "kubernetes", "jobs", "extra"], r.randint(0, 4)):
        if f == "active_workspace":
            c[f] = r.choice(["default", "ws-1", None])
        elif f == "admin_policy":
            c[f] = "http://127.0.0.1:8080/skypilot"
        elif f == "aws":
            c[f] = r.choice([None, {"use_internal_ips": False}, {"vpc_names": ["a"], "use_internal_ips": "yes"},
                             "scalar"])
        else:
            c[f] = rand_node(r, 3, shared)
    return c


# Governed fields of a wrong type or value: (where, value, words the 400 must contain).
BAD = [
    ("labels", ["team=t"], "resources.labels"),
    ("labels", "team=t", "resources.labels"),
    ("labels", {"team": ["t"]}, "resources.labels.team"),
    ("labels", {1: "x"}, "resources.labels"),
    ("accelerators", {"H100": float("inf")}, "accelerators"),
    ("accelerators", {"H100": float("-inf")}, "accelerators"),
    ("accelerators", {"H100": float("nan")}, "accelerators"),
    ("accelerators", {"H100": [8]}, "accelerators"),
    ("accelerators", {"H100": {"n": 8}}, "accelerators"),
    ("accelerators", {"H100": True}, "accelerators"),
    ("accelerators", {"H100": 0}, "accelerators"),
    ("accelerators", {"H100": -1}, "accelerators"),
    ("accelerators", {"H100": 10 ** 9}, "too large"),
    ("accelerators", "H100:inf", "accelerators"),
    ("accelerators", {None: 8}, "accelerators"),
    ("accelerators", 8, "accelerators"),
    ("accelerators", [["H100"]], "accelerators"),
    ("use_spot", "yes", "use_spot"),
    ("use_spot", 1, "use_spot"),
    ("num_nodes", 1.5, "num_nodes"),
    ("num_nodes", "2", "num_nodes"),
    ("num_nodes", 0, "num_nodes"),
    ("num_nodes", True, "num_nodes"),
    ("num_nodes", [2], "num_nodes"),
    ("disk_size", 1.5, "disk_size"),
    ("cpus", [4], "cpus"),
    ("autostop", 1.5, "autostop"),
    ("autostop", [30], "autostop"),
    ("resources", ["a"], "resources"),
    ("any_of", "x", "any_of"),
    ("any_of", ["x"], "any_of"),
    ("deep", None, "deeper"),
]


def bad_task(r):
    where, value, words = r.choice(BAD)
    t = task(r)
    if where == "num_nodes":
        t["num_nodes"] = value
    elif where == "resources":
        t["resources"] = value
    elif where == "deep":
        t["deep"] = deep(r, 70)
    else:
        res = t.get("resources")
        if not isinstance(res, dict):
            res = t["resources"] = {}
        res.pop("any_of", None)
        res.pop("ordered", None)
        res[where] = value
    return t, words


# --- what Warden promises for `launch` ------------------------------------

def view_text(v):
    """The door's text of a scalar label value, as the document wrote it."""
    return v if isinstance(v, str) else None


def expected_launch(task, config):
    """The task and config Warden promises for `launch` (yaml-contract.yaml)."""
    res = task.get("resources")
    alt_key = None
    if isinstance(res, dict):
        alt_key = "any_of" if "any_of" in res else ("ordered" if "ordered" in res else None)
    alts = res.get(alt_key) if alt_key else None
    alts = alts if isinstance(alts, list) and alts else None
    # Rule `spot`: every candidate not already on spot.
    base_spot = res.get("use_spot") is True if isinstance(res, dict) else False
    spot_targets = []
    if alts:
        for alt in alts:
            eff = alt["use_spot"] if "use_spot" in alt else (res.get("use_spot") if isinstance(res, dict) else None)
            if eff is not True:
                spot_targets.append(alt)
    elif not base_spot:
        spot_targets.append(None)
    # Rule `labels`.
    want = {"team": "t", "cost-center": "ml"}
    current = (res.get("labels") if isinstance(res, dict) else None) or {}
    # Added in the mutation's order (label names sorted).
    changed = {k: want[k] for k in sorted(want) if view_text(current.get(k)) != want[k]}
    if spot_targets or changed:
        if not isinstance(task.get("resources"), dict):
            task["resources"] = {}
        res = task["resources"]
    for t in spot_targets:
        (res if t is None else t)["use_spot"] = True
    if changed:
        if not isinstance(res.get("labels"), dict):
            res["labels"] = {}
        res["labels"].update(changed)
        if alts:
            for alt in alts:
                if "labels" in alt:
                    if not isinstance(alt["labels"], dict):
                        alt["labels"] = {}
                    alt["labels"].update(changed)
    # Rule `paths`.
    set_path(task, ["envs", "WARDEN_MARK"], "1e-4")
    set_path(task, ["envs", "WARDEN_TIME"], "1:30")
    set_path(config, ["aws", "use_internal_ips"], True)
    return task, config


def set_path(root, path, value):
    node = root
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


# --- comparison -----------------------------------------------------------

def same(a, b, path="$", ordered=True):
    """Equal, with types, NaN and (`ordered`) key order; the first difference or None."""
    if type(a) is not type(b):
        return "%s: %r (%s) != %r (%s)" % (path, a, type(a).__name__, b, type(b).__name__)
    if isinstance(a, dict):
        ka, kb = list(a.keys()), list(b.keys())
        if not ordered:
            ka, kb = sorted(ka, key=repr), sorted(kb, key=repr)
        if len(ka) != len(kb) or any(type(x) is not type(y) or x != y for x, y in zip(ka, kb)):
            return "%s: keys %r != %r" % (path, ka, kb)
        for k in ka:
            d = same(a[k], b[k], "%s.%r" % (path, k), ordered)
            if d:
                return d
        return None
    if isinstance(a, (list, set)):
        if isinstance(a, set):
            return None if a == b else "%s: %r != %r" % (path, a, b)
        if len(a) != len(b):
            return "%s: length %d != %d" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = same(x, y, "%s[%d]" % (path, i), ordered)
            if d:
                return d
        return None
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return None
    if isinstance(a, datetime.datetime) and a.tzinfo != b.tzinfo:
        return "%s: %r != %r" % (path, a, b)
    return None if a == b else "%s: %r != %r" % (path, a, b)


# --- the run --------------------------------------------------------------

def body(task_text, config_text, request_name):
    inner = {"task": task_text, "skypilot_config": config_text, "request_name": request_name,
             "request_options": None, "at_client_side": True, "user": "", "client_api_version": None,
             "client_version": None}
    return json.dumps(json.dumps(inner)).encode()


def post(conn, path, data):
    for attempt in range(3):
        try:
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def check_one(conn, path, seed, i):
    r = random.Random(seed * 1_000_003 + i)
    failures = []
    if r.random() < 0.08:
        t, words = bad_task(r)
        text = yaml.dump(t, Dumper=LineBreakDumper, sort_keys=False, default_flow_style=False,
                         allow_unicode=r.random() < 0.5)
        status, answer = post(conn, path, body(text, "", "launch"))
        if not 400 <= status < 500 or words not in answer:
            failures.append("doc %d: a wrong `%s` wants a 4xx naming `%s`, got %d: %s\n%s"
                            % (i, words, words, status, answer[:300], text[:600]))
        return failures, 1
    t, c = task(r), config(r)
    # SkyPilot's own (pure-Python) dumper for a fifth, libyaml's emitter
    # (same output but for blank lines, and fast) for the rest.
    dumper = LineBreakDumper if r.random() < 0.2 else getattr(yaml, "CSafeDumper", LineBreakDumper)
    dump = lambda d: yaml.dump(d, Dumper=dumper, sort_keys=False,
                               default_flow_style=r.choice([False, False, None]),
                               allow_unicode=r.random() < 0.5)
    task_text = dump(t)
    config_text = dump(c) if c else ""
    loader = LOADER if r.random() < 0.9 else yaml.SafeLoader
    original = load(task_text, loader) or {}, (load(config_text, loader) if config_text else {}) or {}
    for name in ("exec", "launch"):
        status, answer = post(conn, path, body(task_text, config_text, name))
        raw_break = any(ch in (task_text + config_text if name == "launch" else "") for ch in "\x85\u2028\u2029")
        if name == "launch" and raw_break:
            # Documented refusal: a raw YAML 1.1 line break in a document Warden must rewrite.
            if status != 400 or "raw YAML 1.1 line break" not in answer:
                failures.append("doc %d (launch): a raw line break wants the documented 400, got %d: %s" % (i, status, answer[:300]))
            continue
        if status != 200:
            failures.append("doc %d (%s): want 200, got %d: %s\n--- task ---\n%s" % (i, name, status, answer[:500], task_text[:1500]))
            continue
        out = json.loads(json.loads(answer))
        try:
            got_task, got_config = load(out["task"], loader), load(out["skypilot_config"], loader)
        except yaml.YAMLError as e:
            failures.append("doc %d (%s): PyYAML cannot read the answer: %s\n%s" % (i, name, e, out["task"][:800]))
            continue
        want_task, want_config = original
        if name == "launch":
            # expected_launch changes its arguments: the last use of `original`.
            want_task, want_config = expected_launch(want_task, want_config)
        for what, got, want, sent in (("task", got_task, want_task, out["task"]),
                                      ("config", got_config, want_config, out["skypilot_config"])):
            d = same(want, got or {})
            if d:
                failures.append("doc %d (%s) %s: %s\n--- sent ---\n%s\n--- answer ---\n%s"
                                % (i, name, what, d, (task_text if what == "task" else config_text)[:1500], sent[:1500]))
    return failures, 2


def worker(args):
    url, seed, lo, hi = args
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    failures, requests = [], 0
    for i in range(lo, hi):
        f, n = check_one(conn, u.path, seed, i)
        requests += n
        failures.extend(f[:1])
        if len(failures) >= 20:
            break
    return failures, hi - lo, requests


def main():
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20261204
    workers = int(os.environ.get("WORKERS", "2"))
    step = max(1, count // (workers * 20))
    chunks = [(url, seed, lo, min(count, lo + step)) for lo in range(0, count, step)]
    failures, docs, requests = [], 0, 0
    with multiprocessing.Pool(workers) as pool:
        for f, n, q in pool.imap_unordered(worker, chunks):
            failures.extend(f)
            docs += n
            requests += q
    for f in failures[:20]:
        print("FAIL (seed %d) %s\n" % (seed, f))
    print(json.dumps({"documents": docs, "requests": requests, "failures": len(failures), "seed": seed}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
