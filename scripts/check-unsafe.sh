#!/usr/bin/env bash
# check-unsafe.sh — every Rust file that uses `unsafe` says why at the top
# (`// UNSAFETY:`), and has at least as many `// SAFETY:` comments as unsafe blocks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bad=0
while IFS= read -r f; do
    if ! grep -q 'UNSAFETY:' "$f"; then
        echo "check-unsafe: $f uses unsafe without a '// UNSAFETY:' justification" >&2
        bad=1
    fi
    blocks=$(grep -c 'unsafe {' "$f" || true)
    safety=$(grep -c 'SAFETY:' "$f" || true)
    if (( blocks > safety )); then
        echo "check-unsafe: $f has $blocks unsafe blocks but $safety SAFETY comments" >&2
        bad=1
    fi
done < <(git ls-files '*.rs' | xargs grep -l -E 'unsafe (\{|fn|impl)' || true)
exit $bad
