"""Smoke check of a running `make run`: readiness, login, and a worker-computed results page."""

import re
import sys
import time

import requests

base = sys.argv[1].rstrip("/")
ready = requests.get(f"{base}/readyz", timeout=10)
print("readyz:", ready.status_code, ready.text)
assert ready.status_code == 200, ready.text

session = requests.Session()
login = session.get(f"{base}/accounts/login/", timeout=10)
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
r = session.post(
    f"{base}/accounts/login/",
    data={"username": "demo", "password": "abacus-demo", "csrfmiddlewaretoken": token},
    headers={"Referer": f"{base}/accounts/login/"},
    timeout=10,
)
assert r.status_code == 200 and "checkout-redesign" in r.text, r.text[:2000]

url = f"{base}/api/v1/projects/demo/experiments/checkout-redesign/results"
# make run queues a fresh analysis at startup: wait until the worker has finished it.
for _ in range(180):
    results = session.get(url, timeout=10).json()
    run = results.get("last_run") or {}
    if results.get("computed_at") and run.get("status") == "succeeded":
        break
    if run.get("status") == "failed":
        sys.exit(f"smoke: the worker's analysis failed: {run}")
    time.sleep(1)
else:
    sys.exit(f"smoke: no snapshot from the worker: {results}")
page = session.get(f"{base}/p/demo/experiments/checkout-redesign/results/", timeout=10)
assert page.status_code == 200 and 'id="recommendation"' in page.text, page.text[:2000]
print(
    "smoke: results page ok; recommendation",
    results["recommendation"]["action"],
    "from",
    results["total_units"],
    "units",
)
print("1 passed, 0 failed")
