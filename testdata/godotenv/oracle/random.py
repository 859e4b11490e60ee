"""Writes random.json: 3000 random `.env` texts built from the pieces godotenv treats
specially (quotes, backslashes, `$` forms, `#`, separators, line ends, `export`, non-ASCII
and odd white space), half of them free-form, half shaped like statements. Seeded, so
the same file every time. Then: go run . < random.json | python3 random.py --compact
> random-v1.5.1.json (see ../README.md)."""
import json
import random
import sys

if "--compact" in sys.argv:
    cases = json.load(sys.stdin)
    for c in cases:
        if "err" in c:  # godotenv quotes the rest of the text after its error: once is enough
            c["err"] = c["err"].split(" near ")[0].split(" value ")[0].replace("quoted", "quoted value")
    print("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False, sort_keys=True) for c in cases) + "\n]")
    sys.exit(0)

random.seed(23)
ATOMS = ['A', 'B', 'FOO', 'a', 'x', '1', '_', '.', '-', '=', ':', ' ', '\t', '\n', '\r\n', '\r', '#', ' #', '"',
         "'", '\\', '\\n', '\\"', "\\'", '\\$', '$', '$A', '${A}', '${A', '$(A)', '$a', '}', '{', '(', ')',
         'export ', 'export', '\u00e9', '\u00aa', '\u00a0', '\u0085', '\u2003', '&', '@', '/', '?', '\ufeff',
         '$FOO', 'A=1\n', 'B=$A\n', 'C="x $A"\n']
VALUE = ['x', '$A', '${A}', '\\$A', '"', "'", '\\', '#', ' #', ' ', '\\n', '\n', '$a', '${A', '$', '\\\\', 'y']
cases = []
for _ in range(1500):
    cases.append(''.join(random.choice(ATOMS) for _ in range(random.randint(1, 12))))
for _ in range(1500):
    key = random.choice(['A', 'B', 'FOO', 'export A', 'A ', 'a.b', 'A-B', 'S'])
    sep = random.choice(['=', ': ', '= ', ' = ', ':'])
    val = ''.join(random.choice(VALUE) for _ in range(random.randint(0, 8)))
    quote = random.choice(['', '"', "'"])
    before = random.choice(['', 'A=1\n', 'A=v\n', '# c\n', 'A="q"\n'])
    cases.append(before + key + sep + quote + val + quote + random.choice(['', '\n', ' # c\n', 'B=2']))
with open('random.json', 'w') as f:
    json.dump([{'in': c} for c in cases], f, ensure_ascii=False)
