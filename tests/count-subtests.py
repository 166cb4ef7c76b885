#!/usr/bin/env python3
"""Adds up the TAP test cases (subtests) in meson's testlog.json files.

Prints one line, "TAP subtests: P passed, F failed, S skipped", read the
way meson's own TAP parser reads them: "ok" is a pass, "ok ... # SKIP" a
skip, "not ok" a failure unless marked "# TODO". A test whose output has
no TAP plan ("1..N") is not TAP and contributes nothing.
"""
import json
import re
import sys

TEST = re.compile(r'^(not )?ok\b(?:\s+\d+)?[^#]*(?:#\s*(\w+))?', re.IGNORECASE)

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path, encoding='utf-8', errors='replace') as log:
        for line in log:
            out = json.loads(line).get('stdout') or ''
            if not re.search(r'^1\.\.\d+', out, re.MULTILINE):
                continue
            for tap in out.splitlines():
                m = TEST.match(tap)
                if not m:
                    continue
                directive = (m.group(2) or '').upper()
                if directive.startswith('SKIP') and not m.group(1):
                    skipped += 1
                elif directive == 'TODO':
                    continue
                elif m.group(1):
                    failed += 1
                else:
                    passed += 1
print(f'TAP subtests: {passed} passed, {failed} failed, {skipped} skipped')
