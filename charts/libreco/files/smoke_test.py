"""helm test: ask every model's Service for a recommendation and check the answer's shape.

argv[1] is a JSON list of {"url": ..., "body": {...}}. Exits 1 if any model fails to answer
with a non-empty list of [item, score] pairs after a few tries.
"""
import json
import sys
import time
import urllib.error
import urllib.request


def ask(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def check(url, body, tries=5, pause=3.0):
    problem = "no answer"
    for _ in range(tries):
        try:
            answer = ask(url, body)
        except (urllib.error.URLError, OSError, ValueError) as e:
            problem = str(e)
            time.sleep(pause)
            continue
        lists = list(answer.values()) if isinstance(answer, dict) else []
        pairs = lists[0] if len(lists) == 1 and isinstance(lists[0], list) else []
        if pairs and all(isinstance(p, list) and len(p) == 2 for p in pairs):
            return None
        return f"unexpected answer {answer!r}"
    return problem


failures = 0
for spec in json.loads(sys.argv[1]):
    problem = check(spec["url"], spec["body"])
    print(("ok   " if problem is None else "FAIL ") + spec["url"] + ("" if problem is None
                                                                  else f": {problem}"))
    failures += problem is not None
sys.exit(1 if failures else 0)
