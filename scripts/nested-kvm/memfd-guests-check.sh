#!/usr/bin/env bash
# Checks that the nested-KVM environment keeps guest memory intact, with QEMU (not tsvmm) as the VMM:
# inside the nested VM, ROUNDS rounds of three QEMU/KVM guests with memfd RAM, each the dirtier guest
# stamping 64 MiB for 8 s (guests/build/dirtier.elf; `npm install` builds it). A guest that stops
# before its time (QEMU exits on a triple fault with -no-reboot) counts as damaged.
#
# Usage: scripts/nested-kvm/memfd-guests-check.sh [ROUNDS]   (default 40, about 6 minutes)
#
# With NESTED_KVM_ACCEL=tcg,thread=multi, 4 of ~90 such guests died and the nested VM itself went down
# (QEMU 7.2, Debian bookworm); run.sh's default, thread=single, had none in 120.
set -euo pipefail
ROUNDS=${1:-40}
root=$(cd "$(dirname "$0")/../.." && pwd)
guest=$root/guests/build/dirtier.elf
[[ -f $guest ]] || { echo "memfd-guests-check: $guest is missing (npm install builds it)" >&2; exit 2; }
read -r -d '' inner <<EOF || true
damaged=0; fine=0
for r in \$(seq 1 $ROUNDS); do
  for k in a b c; do
    ( ( sleep 5; echo p ) | timeout -s KILL 8 qemu-system-x86_64 -enable-kvm -no-reboot \
      -M microvm,x-option-roms=off,isa-serial=on,rtc=off -nodefaults -no-user-config -display none \
      -serial stdio -m 256M -object memory-backend-memfd,id=m0,size=256M,share=on -machine memory-backend=m0 \
      -kernel $guest -append 'start=0x1000000 size=0x4000000' > /dev/shm/memfd-check-\$k 2>&1
      echo "status \$?" >> /dev/shm/memfd-check-\$k ) 2>/dev/null &
  done
  wait
  for k in a b c; do
    # 137 (SIGKILL from timeout): it ran until the timeout. Anything else: QEMU ended the guest early.
    if grep -q '^status 137' /dev/shm/memfd-check-\$k; then fine=\$((fine+1)); else damaged=\$((damaged+1)); echo "round \$r: a guest ended early: \$(tr '\n' '|' < /dev/shm/memfd-check-\$k)"; fi
  done
done
echo "memfd-guests-check: \$fine guests ran their 8 s, \$damaged ended early"
[ \$damaged -eq 0 ]
EOF
exec "$root/scripts/nested-kvm/run.sh" -- sh -c "$inner"
