#!/usr/bin/env bash
# Collects the suite twice (another second, another hash seed) and fails if the test ids differ.
# pytest-xdist refuses to start when its workers collect different ids, so an id built from the
# clock, randomness or hash order (e.g. gzip bytes, whose header holds the time) breaks CI on
# some runs only. Parametrize with explicit `ids=` instead of letting pytest print the values.
set -euo pipefail
py=${PY:-.venv/bin/python}
collect() {
  local out
  if ! out=$(PYTHONHASHSEED=$1 "$py" -m pytest --collect-only -q -p no:cacheprovider -p no:xdist 2>&1); then
    echo "check-test-ids: collection failed:" >&2
    grep -v '::' <<<"$out" | tail -n 30 >&2
    return 2
  fi
  grep '::' <<<"$out" | sort
}
first=$(collect 1)
sleep 1.1
second=$(collect 2)
if [[ -z "$first" ]]; then
  echo "check-test-ids: no tests collected" >&2
  exit 5
fi
if [[ "$first" != "$second" ]]; then
  echo "check-test-ids: two collections gave different test ids (time, randomness or hash order):" >&2
  diff <(echo "$first") <(echo "$second") | head -n 20 >&2
  exit 1
fi
echo "check-test-ids: $(wc -l <<<"$first") ids, identical across two collections"
