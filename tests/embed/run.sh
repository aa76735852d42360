#!/usr/bin/env bash
# Embedding test (ctest `embed`):
#
#   tests/embed/run.sh SOURCE_DIR
#
# Configures tests/embed/ (add_subdirectory of SOURCE_DIR) in a temporary
# directory, checks that cmesh's tests and benchmarks are not targets
# there, builds the library and the program, and runs the program.
# Environment: CMAKE (the cmake to use), CC.
set -euo pipefail

if [[ $# -ne 1 ]]; then
	echo "usage: $0 SOURCE_DIR" >&2
	exit 2
fi
src=$(cd "$1" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmake=${CMAKE:-cmake}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cmesh-embed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

"$cmake" -S "$here" -B "$tmp/build" -DCMESH_SOURCE="$src" \
	>"$tmp/configure.log" 2>&1 || { cat "$tmp/configure.log"; exit 1; }
targets=$("$cmake" --build "$tmp/build" --target help 2>/dev/null || true)
for t in test_channel bench_xproc cmesh_testsupport; do
	if grep -q "\.\.\. $t\$" <<<"$targets"; then
		echo "embed: cmesh's $t is a target of the including project" >&2
		exit 1
	fi
done
"$cmake" --build "$tmp/build" --parallel 2 >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log"; exit 1; }
"$tmp/build/embedded"
