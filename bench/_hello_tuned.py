"""The strictest baseline of bench/gateway.py: its hello-world app in a process tuned exactly as
Dropserver's web processes are (dropserver_site/tuning.py), served with serve's Daphne command
line (no access log at all). Not a benchmark module of its own (the leading underscore)."""

from bench.gateway import hello_app
from dropserver_site.tuning import tune_web_process

tune_web_process()

app = hello_app
