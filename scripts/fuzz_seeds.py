#!/usr/bin/env python3
"""Seeds and dictionary words for the request fuzzer, from the job kinds' declarations as
api/openapi.json holds them (tests/openapi_test.cpp keeps it equal to what crunchd serves): each
example of each job operation (x-crunch-examples) becomes a raw HTTP/1.1 request, and every path,
parameter, media type and JSON field a dictionary word. A new kind is fuzzed without a line here.
    scripts/fuzz_seeds.py api/openapi.json SEED_DIR DICT_FILE"""
import base64
import json
import re
import sys

doc_path, seed_dir, dict_path = sys.argv[1:4]
with open(doc_path, encoding="utf-8") as f:
    doc = json.load(f)

words = set()
seeds = 0
for w in ("Prefer: respond-async", "Prefer: wait=", "respond-async, wait=", "Idempotency-Key: ", "/v1/jobs/",
          "/result", "DELETE "):
    words.add(w.encode("utf-8"))


def word(text):
    words.add(text.encode("utf-8"))


for path, item in doc["paths"].items():
    for method, op in item.items():
        examples = op.get("x-crunch-examples")
        if examples is None:
            continue
        word(path.split("{")[0])
        for p in op.get("parameters", []):
            if "name" in p:
                word(p["name"] + "=")
        content = op.get("requestBody", {}).get("content", {})
        for media_type, spec in content.items():
            word("Content-Type: " + media_type)
            for field in spec.get("schema", {}).get("properties", {}):
                word('"' + field + '":')
        for i, example in enumerate(examples):
            if "body_base64" in example:
                body = base64.b64decode(example["body_base64"])
            else:
                body = example.get("body", "").encode("utf-8")
            # A seed is a starting point, not a load: one copy of a repeated body.
            head = f"{method.upper()} {example['target']} HTTP/1.1\r\nHost: x\r\n"
            if content:
                media_type = example.get("content_type") or next(iter(content))
                head += f"Content-Type: {media_type}\r\nContent-Length: {len(body)}\r\n"
            name = re.sub(r"[^a-z0-9]+", "_", f"{op['operationId']}_{i}_{example['name']}".lower()).strip("_")
            with open(f"{seed_dir}/{name}", "wb") as out:
                out.write(head.encode("utf-8") + b"\r\n" + body)
            seeds += 1
            if i == 0:
                # The same, asynchronous and with an idempotency key: the job store's paths.
                extra = "Prefer: respond-async\r\nIdempotency-Key: \"seed-1\"\r\n"
                with open(f"{seed_dir}/{name}_async", "wb") as out:
                    out.write(head.encode("utf-8") + extra.encode("utf-8") + b"\r\n" + body)
                seeds += 1


def quoted(b):
    return '"' + "".join(chr(c) if 0x20 <= c < 0x7F and c not in (0x22, 0x5C) else f"\\x{c:02x}" for c in b) + '"'


with open(dict_path, "a", encoding="ascii") as out:
    out.write("\n# from the kinds' declarations (scripts/fuzz_seeds.py)\n")
    for w in sorted(words):
        out.write(quoted(w) + "\n")
print(f"from the declarations: {seeds} seeds, {len(words)} dictionary words")
