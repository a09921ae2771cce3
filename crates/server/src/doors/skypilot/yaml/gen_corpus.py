# Generates pyyaml_corpus.jsonl: YAML texts as PyYAML dumps them the way
# SkyPilot's client does (block style, keys in insertion order), one JSON
# string per line. Regenerate: python3 gen_corpus.py > pyyaml_corpus.jsonl
import json, random, yaml

class LineBreakDumper(yaml.SafeDumper):
    # SkyPilot's dumper: a blank line between top-level keys.
    def write_line_break(self, data=None):
        super().write_line_break(data)
        if len(self.indents) == 1:
            super().write_line_break()

strings = ["", " ", "plain", "two words", " leading", "trailing ", "a: b", "a:b", "#x", "x #y", "- x", "-1", "-x",
    "null", "Null", "~", "true", "yes", "no", "on", "off", "y", "n", "0123", "0", "-0", "+5", "1e3", "1.5", ".5", "5.",
    "0x1F", "0o17", "0b101", ".inf", "-.inf", ".nan", "inf", "nan", "123456789012345678901234567890",
    "it's", "say \"hi\"", "back\\slash", "tab\there", "line1\nline2", "line1\n\nline3\n", "nvidia-smi\n",
    "trailing space \nnext", "  indented\n  lines  \n", "unicode: é ü 日本", "emoji 🚀", "\u00a0nbsp", "ctrl \x07 bell",
    "long " + "word " * 30, "long-no-spaces-" + "x" * 120, "{a}", "[b]", "*alias", "&anchor", "!tag", "|pipe", ">fold",
    "%pct", "@at", "`tick", "?q", "http://127.0.0.1:8080/mutate", "H100:8", "aws/us-east-1", "4+", "32GB",
    "echo $HOME && nvidia-smi", "python train.py --epochs 10 \\\n  --lr 0.1\n", "a\\\nb"]
keys = ["name", "resources", "accelerators", "infra", "num_nodes", "run", "setup", "envs", "labels", "any_of",
        "ordered", "use_spot", "autostop", "idle_minutes", "down", "file_mounts", "volumes", "ports", "disk_size",
        "image_id", "cloud", "region", "kubernetes", "allowed_contexts", "active_workspace", "admin_policy",
        "_user_specified_yaml", "H100", "A100-80GB", "kueue.x-k8s.io/queue-name", "a.b", "x_y", "8080", "true", "null",
        "with space", "yes", "", "-dash", "CamelCase"]

def scalar(r):
    c = r.random()
    if c < 0.6: return r.choice(strings)
    if c < 0.75: return r.choice([0, 1, 8, -3, 2**40, 2**63 + 5, 1.5, -0.25, 1e20, 3.0])
    if c < 0.85: return r.choice([True, False, None])
    return r.choice(strings) + r.choice(strings)

def node(r, depth):
    c = r.random()
    if depth > 3 or c < 0.5: return scalar(r)
    if c < 0.75:
        return {r.choice(keys): node(r, depth + 1) for _ in range(r.randint(0, 4))}
    return [node(r, depth + 1) for _ in range(r.randint(0, 4))]

r = random.Random(20261123)
docs = []
for i in range(400):
    d = {r.choice(keys): node(r, 1) for _ in range(r.randint(1, 6))}
    dumper = LineBreakDumper if i % 2 else yaml.SafeDumper
    docs.append(yaml.dump(d, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=(i % 3 == 0)))
# A task as SkyPilot writes it, with its _user_specified_yaml.
task = {"name": "gpu-train", "resources": {"infra": "aws", "accelerators": {"H100": 8}, "any_of": [{"use_spot": True, "accelerators": "A100:8"}, {"infra": "gcp/us-central1"}]},
        "num_nodes": 2, "run": "nvidia-smi\npython train.py --epochs 10\n", "envs": {"A": "1", "B": None}, "file_mounts": {}, "volumes": {}}
task["_user_specified_yaml"] = yaml.dump(task, sort_keys=False, default_flow_style=False)
docs.append(yaml.dump(task, Dumper=LineBreakDumper, sort_keys=False, default_flow_style=False))
for d in docs:
    print(json.dumps(d))
