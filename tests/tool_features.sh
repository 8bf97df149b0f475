#!/usr/bin/env bash
# tests/tool_features.sh TOOL SRCDIR BUILDDIR - `mmkit features` reports
# every probed feature, in text and valid JSON, and usage errors exit 2.
set -euo pipefail
tool=$1
out=$("$tool" features)
for k in userfaultfd uffd_wp uffd_wp_async uffd_sigbus pagemap_scan procmap_query soft_dirty \
         memfd mseal shmem_thp hugetlb_pool perf_events pidfd; do
  grep -q "^$k " <<<"$out" || { echo "features: no line for $k"; exit 1; }
done
# every absent feature names its fallback
absent=$(grep -cE '^[a-z_]+ +no ' <<<"$out" || true)
fallbacks=$(grep -c 'fallback:' <<<"$out" || true)
[ "$absent" = "$fallbacks" ] || { echo "absent=$absent fallbacks=$fallbacks"; exit 1; }
json=$("$tool" features --json)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert len(d["features"]) >= 13' "$json"
set +e
"$tool" features --bogus >/dev/null 2>&1; [ $? -eq 2 ] || { echo "bad option must exit 2"; exit 1; }
"$tool" no-such-command >/dev/null 2>&1; [ $? -eq 2 ] || { echo "bad command must exit 2"; exit 1; }
echo OK
