#!/usr/bin/env bash
# Boots every guest under QEMU and checks its serial output and exit status,
# proving the images (not our VMM) are right. TCG by default because CI
# machines may lack /dev/kvm; ACCEL=kvm ./test-under-qemu.sh to use KVM.
set -u
cd "$(dirname "$0")"
make -s || exit 1

QEMU=${QEMU:-qemu-system-x86_64}
ACCEL=${ACCEL:-tcg}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0

# run SECONDS GUEST [qemu args...]: stdout -> $TMP/out, status -> $status.
# stdin is passed through so echo can be fed.
run() {
    local secs=$1 guest=$2
    shift 2
    timeout "$secs" "$QEMU" \
        -M microvm,x-option-roms=off,isa-serial=on,rtc=off -accel "$ACCEL" \
        -nodefaults -no-user-config -display none -serial stdio \
        -device isa-debug-exit,iobase=0xf4,iosize=4 \
        -kernel "build/$guest.elf" "$@" >"$TMP/out" 2>"$TMP/err"
    status=$?
}

# expect NAME STATUS OUTPUT: compares the whole serial stream byte for byte.
expect() {
    local name=$1 want_status=$2 want_out=$3
    if [ "$status" = "$want_status" ] && [ "$(cat "$TMP/out"; echo x)" = "${want_out}x" ]; then
        echo "PASS $name"
    else
        echo "FAIL $name: status $status (want $want_status)"
        echo "  got:  $(od -An -c "$TMP/out" | tr -s ' ' | head -c 400)"
        echo "  want: $(printf '%s' "$want_out" | od -An -c | tr -s ' ' | head -c 400)"
        sed 's/^/  stderr: /' "$TMP/err"
        failures=$((failures + 1))
    fi
}

# expect_has NAME STATUS STRING...: for output that depends on timing; each
# STRING must occur somewhere in the serial stream.
expect_has() {
    local name=$1 want_status=$2 s missing=
    shift 2
    for s in "$@"; do
        grep -qF -- "$s" "$TMP/out" || missing="$missing [$s]"
    done
    if [ "$status" = "$want_status" ] && [ -z "$missing" ]; then
        echo "PASS $name"
    else
        echo "FAIL $name: status $status (want $want_status), missing:$missing"
        echo "  got:  $(head -c 400 "$TMP/out")"
        sed 's/^/  stderr: /' "$TMP/err"
        failures=$((failures + 1))
    fi
}

# QEMU's multiboot loader passes "<kernel path> <-append string>" as cmdline.
run 20 hello </dev/null
expect "hello (GED power-off -> 0)" 0 $'Hello from a tsvmm guest!\nmem_upper=130048\ncmdline=build/hello.elf \n'

run 20 hello -m 256M -append "a=b" </dev/null
expect "hello -m 256M -append a=b" 0 $'Hello from a tsvmm guest!\nmem_upper=261120\ncmdline=build/hello.elf a=b\n'

run 20 exit-code -append "code=7" </dev/null
expect "exit-code code=7 (-> 7<<1|1)" 15 $'exiting with 7\n'

run 20 exit-code </dev/null
expect "exit-code default 42 (-> 85)" 85 $'exiting with 42\n'

run 20 pio-loop -append "count=1000" </dev/null
expect "pio-loop count=1000" 0 $'pio-loop done 1000\n'

run 60 pio-loop -append "count=1M" </dev/null
expect "pio-loop count=1M" 0 $'pio-loop done 1048576\n'

run 20 echo < <(printf 'abq')
expect "echo (stdin abq)" 0 $'echo ready\nab\nbye\n'

# idle halts between ticks of its LAPIC timer (100 Hz): asked twice, half a
# second apart, it must have counted on, i.e. its timer woke it.
run 20 idle < <(sleep 1; printf t; sleep 0.5; printf tq)
ticks=$(grep -o 'idle: ticks [0-9]*' "$TMP/out" | awk '{print $3}' | tr '\n' ' ')
expect_has "idle (stdin t, t, q)" 0 $'idle: halting\n' "idle: bye"
set -- $ticks
if [ $# = 2 ] && [ "$1" -lt "$2" ]; then
    echo "PASS idle ticking: $1 -> $2"
else
    echo "FAIL idle ticking: ticks '$ticks'"
    failures=$((failures + 1))
fi

run 20 triple-fault -no-reboot </dev/null
expect "triple-fault -no-reboot" 0 $'about to triple fault\n'

# dirtier with 128 MiB: 16 MiB-128 MiB is 0x7000000 bytes, 28672 pages.
run 30 dirtier -m 128M -append "passes=3" </dev/null
expect "dirtier passes=3" 0 $'dirtier: start=0x1000000 size=0x7000000 pages=28672\ndirtier: dirtying\ndirtier: verify ok pass=3 pages=28672\n'

# Commands are read once per pass, so which pass they hit depends on timing.
run 30 dirtier -m 128M < <(printf 'vq')
expect_has "dirtier stdin vq" 0 "dirtier: start=0x1000000 size=0x7000000 pages=28672" \
    "dirtier: verify ok pass=" "dirtier: quit after pass "

# hold=1: after pass 1 it halts between timer ticks (hlt and sti from ring 3,
# emulated in ring 0) and still answers v and q.
run 30 dirtier -m 128M -append "hold=1" < <(printf 'vq')
expect "dirtier hold=1 (stdin vq)" 0 $'dirtier: start=0x1000000 size=0x7000000 pages=28672\ndirtier: dirtying\ndirtier: holding\ndirtier: verify ok pass=1 pages=28672\ndirtier: quit after pass 1\n'

# corrupt=1 leaves the middle page (0x1000000 + 128 pages) at pass 1.
run 30 dirtier -append "passes=2 size=1M corrupt=1" </dev/null
expect "dirtier corrupt=1 (verify fails -> 7)" 7 $'dirtier: start=0x1000000 size=0x100000 pages=256\ndirtier: dirtying\ndirtier: verify FAILED at 0x1080000: pass=1 index=0x1080 expected pass=2 index=0x1080\ndirtier: 1 bad pages\n'

# span=1 across the hole below 4 GiB: microvm's RAM ends at 3 GiB and goes on
# from 4 GiB (3200 MiB: 128 MiB there), which only page directories the
# dirtier builds itself map: 4 MiB below the hole, 128 MiB above, 33792 pages.
run 60 dirtier -m 3200M -append "start=0xbfc00000 span=1 passes=3" </dev/null
expect "dirtier span=1 across the 3-4 GiB hole" 0 $'dirtier: start=0xbfc00000 size=0x8400000 pages=33792 pieces=2 end=0x108000000\ndirtier: dirtying\ndirtier: verify ok pass=3 pages=33792\n'

# RAM far above 4 GiB (16 GiB into a 20 GiB guest: thirteen directories).
run 60 dirtier -m 20G -append "start=0x400000000 span=1 size=16M passes=2" </dev/null
expect "dirtier span=1 at 16 GiB" 0 $'dirtier: start=0x400000000 size=0x1000000 pages=4096 pieces=1 end=0x401000000\ndirtier: dirtying\ndirtier: verify ok pass=2 pages=4096\n'

run 20 dirtier -m 3200M -append "start=0xb00000 span=1" </dev/null
expect "dirtier span=1 refuses its page directories (-> 5)" 5 $'dirtier: bad range start=0xb00000 size=0x0: range overlaps the page directories for RAM above 4 GiB (0xc00000-0xc3bfff)\n'

run 20 dirtier -append "start=0x100000 size=1M" </dev/null
expect "dirtier refuses its own image (-> 5)" 5 $'dirtier: bad range start=0x100000 size=0x100000: range overlaps the guest image\n'

# diskcheck over a 1 MiB raw image (2048 sectors). Modern virtio-mmio needs
# force-legacy=false; the first -device sits in the top slot, 23.
V="-global virtio-mmio.force-legacy=false"
truncate -s 1M "$TMP/disk.img"
blk() { echo "-device virtio-blk-device,drive=d0${2-} -drive if=none,id=d0,file=$TMP/disk.img,format=raw${1-}"; }
# shellcheck disable=SC2046
run 30 diskcheck $V $(blk "" ",serial=under-qemu") -append "run=5 passes=2" </dev/null
expect "diskcheck run=5 passes=2 (-> 33)" 33 $'diskcheck: slot=23 capacity=2048 sectors=2048 req=65536 depth=4 run=5 passes=2 ro=0 flush=1 verify-only=0\ndiskcheck: id="under-qemu"\ndiskcheck: pass 1: wrote 2048 sectors, flushed, read 2048, ok 2048, bad 0\ndiskcheck: pass 2: wrote 2048 sectors, flushed, read 2048, ok 2048, bad 0\ndiskcheck: PASS\n'

# A second boot verifies what the first left, from a read-only drive.
# shellcheck disable=SC2046
run 30 diskcheck $V $(blk ",readonly=on") -append "run=5 passes=2 verify-only=1" </dev/null
expect "diskcheck verify-only=1 read-only (-> 33)" 33 $'diskcheck: slot=23 capacity=2048 sectors=2048 req=65536 depth=4 run=5 passes=2 ro=1 flush=1 verify-only=1\ndiskcheck: id=""\ndiskcheck: pass 2: wrote 0 sectors, not flushed, read 2048, ok 2048, bad 0\ndiskcheck: PASS\n'

# Requests may complete out of order, so which sectors get a line varies.
# shellcheck disable=SC2046
run 30 diskcheck $V $(blk ",readonly=on") -append "run=6 passes=1 verify-only=1" </dev/null
expect_has "diskcheck verify-only=1 wrong run (-> 35)" 35 \
    " run=5 pass=2 sum=ok first-diff-byte=16 expected run=6 pass=1" \
    "diskcheck: pass 1: wrote 0 sectors, not flushed, read 2048, ok 0, bad 2048" "diskcheck: FAIL verify"

# stamp=0 (benchmarks) moves the data and checks nothing.
# shellcheck disable=SC2046
run 30 diskcheck $V $(blk "") -append "stamp=0 req=4K" </dev/null
expect "diskcheck stamp=0 (-> 33)" 33 $'diskcheck: slot=23 capacity=2048 sectors=2048 req=4096 depth=4 run=1 passes=1 ro=0 flush=1 verify-only=0 stamp=0\ndiskcheck: id=""\ndiskcheck: pass 1: wrote 2048 sectors, flushed, read 2048, ok 0, bad 0\ndiskcheck: PASS\n'

# Writes to a read-only drive fail with VIRTIO_BLK_S_IOERR: reported, no hang.
# 2048 sectors / 128 per request = 16 requests.
# shellcheck disable=SC2046
run 30 diskcheck $V $(blk ",readonly=on") </dev/null
expect "diskcheck read-only drive (-> 37)" 37 $'diskcheck: slot=23 capacity=2048 sectors=2048 req=65536 depth=4 run=1 passes=1 ro=1 flush=1 verify-only=0\ndiskcheck: id=""\ndiskcheck: pass 1: wrote 0 sectors, flushed, read 0, ok 0, bad 0\ndiskcheck: write errors: 16 requests failed (IOERR 16, UNSUPP 0, other 0), first at sector 0 status 1\ndiskcheck: FAIL write errors\n'

# shellcheck disable=SC2046
run 30 diskcheck $(blk "") </dev/null
expect "diskcheck refuses legacy virtio-mmio (-> 39)" 39 $'virtio: slot 23 at 0xfeb02e00: device 2 offers only legacy virtio-mmio (version 1); this driver needs version 2: run QEMU with -global virtio-mmio.force-legacy=false\ndiskcheck: FAIL no usable virtio-blk device\n'

run 20 diskcheck $V </dev/null
expect "diskcheck without a disk (-> 39)" 39 $'virtio: no device with DeviceID 2 in the virtio-mmio window\ndiskcheck: FAIL no usable virtio-blk device\n'

# netecho's UDP exchanges need a peer: test/e2e/virtio-guests-under-qemu.test.ts.
# Here: startup, the p/q serial commands, and refusals. QEMU's user netdev
# sends the guest nothing unasked. With acpi=off microvm has 8 slots (7 top).
run 20 netecho $V -M microvm,acpi=off -netdev user,id=n0 -device virtio-net-device,netdev=n0 \
    -append "ip=192.168.7.2 port=9" < <(sleep 1; printf p; sleep 0.5; printf q)
expect "netecho p, q (acpi=off: slot 7) (-> 33)" 33 $'netecho: slot=7 mac=52:54:00:12:34:56 ip=192.168.7.2 port=9 link=up queues=256/256\nnetecho: ready\nnetecho: stats: udp 0, arp 0, icmp 0, dropped 0\nnetecho: quit: udp 0, arp 0, icmp 0, dropped 0\n'

run 20 netecho $V -append "ip=10.0.2" </dev/null
expect "netecho bad ip= (-> 41)" 41 $'netecho: bad command line: ip= must be a dotted quad like 10.0.2.15\n'

run 20 netecho $V </dev/null
expect "netecho without a NIC (-> 39)" 39 $'virtio: no device with DeviceID 1 in the virtio-mmio window\nnetecho: FAIL no usable virtio-net device\n'

# The stamping loop must run in ring 3 with IOPL=3 (the point of dirtier's
# design): sample the registers over QMP, then quit (status 0). The checker
# waits for the startup line, so clear the previous test's output first.
: >"$TMP/out"
PYTHONPATH="$PWD" python3 - "$TMP/qmp-dirtier" "$TMP/out" >"$TMP/dirtier-check" 2>&1 <<'PY' &
import re, sys, time
from qmp_probe import connect, wait_for_output
sock_path, out_path = sys.argv[1:3]
deadline = time.time() + 15
qmp = connect(sock_path, deadline)
wait_for_output(out_path, "pages=", deadline)
time.sleep(0.2)
r = qmp("human-monitor-command", **{"command-line": "info registers"})
qmp("quit")
cpl = re.search(r"CPL=(\d)", r).group(1)
cs = re.search(r"^CS =(\w+)", r, re.M).group(1)
iopl = int(re.search(r"RFL=(\w+)", r).group(1), 16) >> 12 & 3
print(f"CPL={cpl} CS={cs} IOPL={iopl}")
sys.exit(0 if (cpl, cs, iopl) == ("3", "0023", 3) else "not in ring 3 with IOPL=3")
PY
checker=$!
run 20 dirtier -append "size=1M" -qmp "unix:$TMP/qmp-dirtier,server=on,wait=off" </dev/null
if wait "$checker" && [ "$status" = 0 ]; then
    echo "PASS dirtier runs in ring 3: $(cat "$TMP/dirtier-check")"
else
    echo "FAIL dirtier ring 3 (status $status): $(cat "$TMP/dirtier-check")"
    failures=$((failures + 1))
fi

# spin never exits on its own. A QMP client checks the counter at 0x200000
# moves, freezes across stop, moves after cont, then quits QEMU (status 0);
# the timeout (124) only ends a QEMU whose checker never got that far. The
# generous limits are for loaded machines, where QEMU can take seconds to start.
PYTHONPATH="$PWD" python3 - "$TMP/qmp" "$TMP/out" >"$TMP/spin-check" 2>&1 <<'PY' &
import re, sys, time
from qmp_probe import connect, wait_for_output
sock_path, out_path = sys.argv[1:3]
deadline = time.time() + 50
qmp = connect(sock_path, deadline)
wait_for_output(out_path, "spinning", deadline)
def counter():
    r = qmp("human-monitor-command", **{"command-line": "xp /1gx 0x200000"})
    return int(re.search(r": (0x[0-9a-f]+)", r).group(1), 16)
a = counter(); time.sleep(0.3); b = counter()
qmp("stop"); c = counter(); time.sleep(0.3); d = counter()
qmp("cont"); time.sleep(0.3); e = counter()
print(f"counter: {a} -> {b} running, {c} -> {d} stopped, {e} after cont")
ok = a < b <= c == d < e
try:
    qmp("quit")
except Exception:
    pass  # QEMU closes the socket as it quits
sys.exit(0 if ok else "counter did not behave")
PY
checker=$!
run 60 spin -qmp "unix:$TMP/qmp,server=on,wait=off" </dev/null
expect "spin (quit over QMP)" 0 $'spinning\n'
if wait "$checker"; then
    echo "PASS spin counter: $(cat "$TMP/spin-check")"
else
    echo "FAIL spin counter: $(cat "$TMP/spin-check")"
    failures=$((failures + 1))
fi

[ "$failures" = 0 ] && echo "all guests OK under QEMU ($ACCEL)" || echo "$failures failure(s)"
exit $((failures != 0))
