# Generates resolve_corpus.jsonl: [value, tag] pairs, the tag PyYAML 6.0's
# resolver gives each value as an untagged plain scalar. The values are
# every edge of each of its regular expressions plus random strings over
# the characters they use. Regenerate:
#   python3 gen_resolve_corpus.py > resolve_corpus.jsonl
import json, random, yaml

r = yaml.resolver.Resolver()
vals = ["", "~", "null", "Null", "NULL", "nULL", "none", "None", "yes", "Yes", "YES", "yEs", "y", "Y", "n", "N",
        "no", "No", "NO", "true", "True", "TRUE", "tRUE", "false", "off", "Off", "OFF", "on", "On", "ON", "oN",
        "<<", "<", "=", "==", "0", "-0", "+0", "00", "07", "08", "0_", "0b", "0b1", "0b_", "0b2", "-0b1", "0x",
        "0x_", "0xfF", "0xg", "-0x1", "0o17", "1", "-1", "+1", "1_000", "_1", "1_", "1:30", "1:60", "1:6", "1:5_9",
        "-1:30", "01:30", "0:30", "1:30:59", "1:", "1:3a", "1.", "1.0", "-1.0", "+1.0", ".5", "-.5", "+.5", "._5",
        "._", ".", "-.", "1e3", "1e+3", "1.e+3", "1.0e3", "1.0e+3", "1.0E-3", "1.0e+", ".5e+3", ".5e3", "1_0.5_",
        "1:30.5", "1:30.", "1:30.5e+3", ".inf", ".Inf", ".INF", ".iNF", "-.inf", "+.inf", "inf", "-inf", ".nan",
        ".NaN", ".NAN", "-.nan", "nan", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5",
        "2001-12-14T21:59:43Z", "2001-1-1 1:00:00", "2001-12-14 21:59:43 +05:30", "2001-12-14  \t21:59:43.",
        "2001-12-14T21:59", "2001-12-1", "20011-12-14", "2001-12-14T21:59:43 Z", "2001-12-14T21:59:43+5:30",
        "2001-12-14T21:59:43+05:3", "2001-12-14x", "1e-4", "3e10", "1.5e-4", "0.0001", "1_000.000_1", "123456789012345678901234567890"]
random.seed(9)
alphabet = "0123456789_.:+-eE xXbBoO ~<=tTnNyY\t"
for _ in range(3000):
    s = "".join(random.choice(alphabet) for _ in range(random.randint(1, 8)))
    if s.strip() == s and s.strip(" \t"):
        vals.append(s)
for _ in range(600):
    d = "%04d-%02d-%02d" % (random.randint(0, 9999), random.randint(0, 99), random.randint(0, 99))
    tail = random.choice(["", "T1:02:03", " 01:02:03.5", "t12:00:00Z", " 12:00:00 -5", "T12:00:00+05:30", "T1:2:3", "T12:00:00.", "  12:00:00 Z"])
    vals.append(d + tail)
seen = set()
for v in vals:
    if v in seen:
        continue
    seen.add(v)
    print(json.dumps([v, r.resolve(yaml.ScalarNode, v, (True, False))]))
