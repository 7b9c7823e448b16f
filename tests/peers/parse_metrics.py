"""Parses OpenMetrics text from stdin with prometheus_client's strict parser; prints the family
names (JSON list) or exits 1 with the parser's error."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

try:
    families = [family.name for family in text_string_to_metric_families(sys.stdin.read())]
except Exception as error:  # the parser raises ValueError subclasses with the offending line
    print(f"parse error: {error}", file=sys.stderr)
    sys.exit(1)
print(json.dumps(sorted(families)))
