#!/usr/bin/env bash
# examples/run.sh DIR - runs the examples built in DIR (vmm, device,
# listener, config): the VMM with its device (killed and respawned
# midway), a listener serving four unrelated client processes, and a
# configuration publisher followed by four subscriber processes through
# cells. Exit 0 if all pass.
set -euo pipefail

dir=$(cd "$1" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cmesh-examples.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== vmm + device"
timeout 60 "$dir/vmm" "$dir/device"

echo "== listener + 4 clients"
sock=$tmp/svc.sock
timeout 60 "$dir/listener" serve "$sock" 4 >"$tmp/server.out" &
server=$!
for _ in $(seq 1 500); do
	[[ -S $sock ]] && break
	sleep 0.01
done
pids=()
for id in 1 2 3 4; do
	timeout 30 "$dir/listener" client "$sock" "$id" &
	pids+=($!)
done
for p in "${pids[@]}"; do
	wait "$p"
done
wait "$server"
cat "$tmp/server.out"
[[ $(grep -c '^listener: client ' "$tmp/server.out") -eq 4 ]]

echo "== config publisher + 4 subscribers"
timeout 60 "$dir/config" publish 4
echo "examples passed"
