#!/usr/bin/env bash
# Run a command inside a throw-away L1 VM (Debian's own kernel under QEMU/TCG
# with an SVM-capable CPU model) that provides a real /dev/kvm (kvm_amd).
#
# Usage: scripts/nested-kvm/run.sh [--mem 4G] [--smp 1] [--rw PATH]... [--verbose] -- COMMAND ARGS...
#
#  * The host's / is visible read-only at the same paths inside the VM (9p).
#  * /work, /tmp, the caller's cwd and every --rw PATH are writable (9p, passthrough).
#  * COMMAND runs as root in the caller's cwd with the caller's environment
#    (PATH/HOME forced to sane values if unset), stdin = /dev/null.
#  * COMMAND's stdout/stderr go to this script's stdout/stderr (virtio-serial ports).
#  * The script exits with COMMAND's exit status (125 if the VM failed before
#    the command could run; the L1 console log is printed to stderr then).
#
# Environment knobs:
#   NESTED_KVM_CACHE   cache dir for the initramfs (default /tmp/nested-kvm-cache)
#   NESTED_KVM_CPU     QEMU -cpu value (default: max,-erms; see below)
#   NESTED_KVM_ACCEL   QEMU -accel value (default: tcg,thread=single; see below, with --smp)
#   NESTED_KVM_KERNEL  kernel image (default: newest /boot/vmlinuz-*)
#   NESTED_KVM_PVH     1 (default): boot the extracted uncompressed vmlinux via PVH; 0: boot bzImage
#   NESTED_KVM_CONSOLE_LOG  keep the L1 serial console log at this path (default: discarded)
set -euo pipefail

MEM=4G
SMP=1 # see ACCEL below
VERBOSE=0
RW_PATHS=(/work /tmp)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mem) MEM=$2; shift 2 ;;
    --mem=*) MEM=${1#*=}; shift ;;
    --smp) SMP=$2; shift 2 ;;
    --smp=*) SMP=${1#*=}; shift ;;
    --rw) RW_PATHS+=("$2"); shift 2 ;;
    --rw=*) RW_PATHS+=("${1#*=}"); shift ;;
    --verbose|-v) VERBOSE=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then echo "usage: $0 [--mem 4G] [--smp N] [--rw PATH]... [--verbose] -- COMMAND ARGS..." >&2; exit 2; fi

# ERMS off: TCG runs `rep movsb`/`rep stosb` one byte per loop iteration through its soft MMU, and
# with ERMS advertised both glibc's memcpy (above ~2 KiB) and the kernel's copy_user/clear_page use
# them. Measured in the nested VM: Node's Buffer copies 325 MB/s with ERMS, 3 GB/s without; Node's
# loopback TCP 46-86 MB/s with, 128-191 MB/s without. It changes how fast every program in the nested
# VM copies memory (QEMU's and tsvmm's alike), nothing else.
CPU=${NESTED_KVM_CPU:-max,-erms}
# One vCPU and one TCG thread. With two vCPUs on two TCG threads (thread=multi), Debian's QEMU 7.2
# corrupted nested guests' memory now and then: dirtier guests triple-faulted with their own page
# tables reading not-present (in tsvmm, and in QEMU/KVM with memfd RAM inside the nested VM: 4 of ~90
# runs, scripts/nested-kvm/memfd-guests-check.sh), and the nested VM itself hung or died. Two vCPUs
# on one thread (thread=single) had none in 120 runs but took minutes where a guest's vCPUs wait on
# each other (100 ms round-robin slices: Linux bringing up its second CPU); one vCPU leaves that to
# the nested kernel's scheduler.
ACCEL=${NESTED_KVM_ACCEL:-tcg,thread=single}
KERNEL=${NESTED_KVM_KERNEL:-$(ls -1v /boot/vmlinuz-* | tail -n1)}
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER
[[ -r $KERNEL && -d $MODDIR ]] || { echo "nested-kvm: kernel $KERNEL or $MODDIR missing" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null || { echo "nested-kvm: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)" >&2; exit 125; }

# Modules to load, in dependency order (deps resolved from modules.dep at build time). veth and tun
# let tests build network namespaces joined by veth pairs and tap devices inside L1.
WANT_MODULES=(virtio_pci virtio_console 9pnet_virtio 9p kvm_amd veth tun)

# ---------------------------------------------------------------- initramfs
CACHE=${NESTED_KVM_CACHE:-/tmp/nested-kvm-cache}
read -r -d '' INIT <<'INIT_EOF' || true
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt/root /ctl
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "nested-kvm: init reached at uptime $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /modules.list); do
  args=
  [ -f "/params/$m" ] && args=$(cat "/params/$m")
  insmod "/modules/$m.ko" $args || echo "nested-kvm: insmod $m failed"
done
fail() { echo "nested-kvm: $*"; echo "nested-kvm: cpu flags: $(grep -m1 '^flags' /proc/cpuinfo)"; dmesg | tail -n 40; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 ctl /ctl || fail "mounting ctl share failed"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /mnt/root || fail "mounting host root failed"
R=/mnt/root
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -o bind /dev $R/dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/run
# Loopback, so commands inside can use TCP on 127.0.0.1 (there is no other network in L1).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# writable shares: /ctl/rw lists "tag path" lines
while read -r tag path; do
  [ -n "$tag" ] || continue
  mount -t 9p -o trans=virtio,version=9p2000.L,cache=mmap,msize=512000 "$tag" "$R$path" || fail "mounting $path ($tag) failed"
done < /ctl/rw
[ -c /dev/kvm ] || fail "/dev/kvm missing after loading kvm_amd"
port() { for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name 2>/dev/null)" = "$1" ] && echo /dev/${p##*/}; done; }
OUT=$(port stdout); ERR=$(port stderr)
[ -n "$OUT" ] && [ -n "$ERR" ] || fail "virtio-serial ports not found"
echo "nested-kvm: running command at uptime $(cut -d' ' -f1 /proc/uptime)s"
chroot $R /bin/sh -c "$(cat /ctl/cmd.sh)" </dev/null >"$OUT" 2>"$ERR"
rc=$?
echo "$rc" > /ctl/rc
echo "nested-kvm: command exited with $rc at uptime $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
INIT_EOF

STAMP=$(printf '%s\n' "$KVER" "$(stat -c %Y "$KERNEL")" "${WANT_MODULES[*]}" "$INIT" | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$KVER-$STAMP.cpio.gz
if [[ ! -s $INITRD ]]; then
  mkdir -p "$CACHE"
  B=$(mktemp -d "$CACHE/build.XXXXXX")
  mkdir -p "$B/bin" "$B/modules" "$B/params"
  cp /bin/busybox "$B/bin/busybox"
  ! command -v file >/dev/null || file -L /bin/busybox | grep -qE 'statically linked|static-pie' || { echo "nested-kvm: /bin/busybox must be static (apt-get install busybox-static)" >&2; exit 125; }
  printf '%s\n' "$INIT" > "$B/init"; chmod +x "$B/init"
  # resolve dependencies (modules.dep lists deps of each module; load deps first, depth-first)
  declare -A SEEN=()
  ORDER=()
  resolve() {
    local name=$1 line path dep
    line=$(grep -E "(^|/)${name//_/[-_]}\.ko(\.xz|\.zst)?:" "$MODDIR/modules.dep" | head -n1 || true)
    if [[ -z $line ]]; then
      # built-in?
      if grep -qE "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then return 0; fi
      echo "nested-kvm: module $name not found in $MODDIR" >&2; exit 125
    fi
    path=${line%%:*}
    [[ -n ${SEEN[$path]:-} ]] && return 0
    SEEN[$path]=1
    for dep in ${line#*:}; do
      local dn=${dep##*/}; dn=${dn%%.ko*}
      resolve "$dn"
    done
    local base=${path##*/}; base=${base%%.ko*}
    case "$path" in
      *.xz) xz -dc "$MODDIR/$path" > "$B/modules/$base.ko" ;;
      *.zst) zstd -qdc "$MODDIR/$path" > "$B/modules/$base.ko" ;;
      *) cp "$MODDIR/$path" "$B/modules/$base.ko" ;;
    esac
    ORDER+=("$base")
  }
  for m in "${WANT_MODULES[@]}"; do resolve "$m"; done
  printf '%s\n' "${ORDER[@]}" > "$B/modules.list"
  (cd "$B" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$B"
fi

# Uncompressed vmlinux (PVH entry point, CONFIG_PVH=y in Debian kernels): QEMU can
# boot it directly, skipping SeaBIOS' bzImage path and the ~2.5 s xz decompression
# that is very slow under TCG. Falls back to the bzImage if extraction fails.
BOOT_KERNEL=$KERNEL
if [[ ${NESTED_KVM_PVH:-1} == 1 ]]; then
  VMLINUX=$CACHE/vmlinux-$KVER-$(stat -c %Y "$KERNEL")
  if [[ ! -s $VMLINUX ]]; then
    mkdir -p "$CACHE"
    for magic in $'\xfd7zXZ\x00' $'\x28\xb5\x2f\xfd' $'\x1f\x8b\x08'; do
      off=$(LC_ALL=C grep -abo "$magic" "$KERNEL" 2>/dev/null | head -n1 | cut -d: -f1 || true)
      [[ -n $off ]] || continue
      case "$magic" in
        *7zXZ*) dec=(xz -dc --single-stream) ;;
        $'\x28'*) dec=(zstd -qdc) ;;
        *) dec=(gzip -dc) ;;
      esac
      if tail -c +$((off + 1)) "$KERNEL" | "${dec[@]}" > "$VMLINUX.tmp.$$" 2>/dev/null || [[ -s $VMLINUX.tmp.$$ ]]; then
        if [[ $(head -c4 "$VMLINUX.tmp.$$") == $'\x7fELF' ]]; then mv "$VMLINUX.tmp.$$" "$VMLINUX"; break; fi
      fi
      rm -f "$VMLINUX.tmp.$$"
    done
  fi
  [[ -s $VMLINUX ]] && BOOT_KERNEL=$VMLINUX
fi

# ---------------------------------------------------------------- per-run control dir
CTL=$(mktemp -d /tmp/nested-kvm-run.XXXXXX)
cleanup() { rm -rf "$CTL"; }
trap cleanup EXIT

q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

CWD=$(pwd -P)
# writable paths: dedupe, drop paths already covered by another writable path
RW_PATHS+=("$CWD")
declare -a RW_FINAL=()
for p in "${RW_PATHS[@]}"; do
  [[ -d $p ]] || continue
  p=$(cd "$p" && pwd -P)
  [[ $p == / ]] && continue   # never remount the whole root read-write
  covered=0
  for o in "${RW_PATHS[@]}"; do
    [[ -d $o ]] || continue
    o=$(cd "$o" && pwd -P)
    if [[ $o != "$p" && ( $o == / || $p == "$o"/* ) ]]; then covered=1; fi
  done
  for o in "${RW_FINAL[@]}"; do [[ $o == "$p" ]] && covered=1; done
  [[ $covered == 1 ]] || RW_FINAL+=("$p")
done

QEMU_SHARES=()
: > "$CTL/rw"
i=0
for p in "${RW_FINAL[@]}"; do
  tag=rw$i; i=$((i + 1))
  QEMU_SHARES+=(-fsdev "local,id=fs$tag,path=$p,security_model=passthrough,multidevs=remap"
                -device "virtio-9p-pci,fsdev=fs$tag,mount_tag=$tag")
  printf '%s %s\n' "$tag" "$p" >> "$CTL/rw"
done

{
  while IFS= read -r -d '' kv; do
    name=${kv%%=*}
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    case "$name" in PWD|OLDPWD|SHLVL|_) continue ;; esac
    printf 'export %s=%s\n' "$name" "$(q "${kv#*=}")"
  done < <(env -0)
  printf 'export PATH=%s\n' "$(q "${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}")"
  printf 'export HOME=%s\n' "$(q "${HOME:-/root}")"
  printf 'cd %s || exit 125\n' "$(q "$CWD")"
  printf 'exec'
  for a in "$@"; do printf ' %s' "$(q "$a")"; done
  printf '\n'
} > "$CTL/cmd.sh"

if [[ $VERBOSE == 1 ]]; then SERIAL=(-chardev "file,id=con,path=/proc/self/fd/2,append=on" -serial chardev:con); APPEND_Q="";
else SERIAL=(-serial "file:${NESTED_KVM_CONSOLE_LOG:-$CTL/console.log}"); APPEND_Q="quiet loglevel=3"; fi

# The guest's stdout/stderr ports are relayed through FIFOs + cat so that they are
# written through *our* stdout/stderr file descriptions (shared offsets when the
# caller redirected to a regular file, no tty mode changes).
mkfifo "$CTL/stdout.fifo" "$CTL/stderr.fifo"
cat "$CTL/stdout.fifo" & CAT_OUT=$!
cat "$CTL/stderr.fifo" >&2 & CAT_ERR=$!
# Guard writers (O_RDWR on a FIFO never blocks): lets the cats' open() return even
# if QEMU dies before opening the FIFOs; closed after QEMU exits so the cats see EOF.
exec 7<>"$CTL/stdout.fifo" 8<>"$CTL/stderr.fifo"

set +e
qemu-system-x86_64 \
  -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$SMP" \
  -machine q35 -display none -monitor none -no-reboot -nodefaults \
  "${SERIAL[@]}" \
  -kernel "$BOOT_KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 $APPEND_Q panic=-1 mitigations=off rdinit=/init" \
  -fsdev "local,id=fsroot,path=/,security_model=passthrough,readonly=on,multidevs=remap" \
  -device virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot \
  -fsdev "local,id=fsctl,path=$CTL,security_model=passthrough" \
  -device virtio-9p-pci,fsdev=fsctl,mount_tag=ctl \
  "${QEMU_SHARES[@]}" \
  -device virtio-serial-pci,id=vser \
  -chardev "file,id=cout,path=$CTL/stdout.fifo" -device virtserialport,bus=vser.0,chardev=cout,name=stdout \
  -chardev "file,id=cerr,path=$CTL/stderr.fifo" -device virtserialport,bus=vser.0,chardev=cerr,name=stderr \
  </dev/null 7>&- 8>&-
qrc=$?
exec 7>&- 8>&-
wait "$CAT_OUT" "$CAT_ERR"
set -e

if [[ -s $CTL/rc ]]; then
  exit "$(cat "$CTL/rc")"
fi
echo "nested-kvm: VM ended (qemu status $qrc) without running the command" >&2
for f in "${NESTED_KVM_CONSOLE_LOG:-}" "$CTL/console.log"; do [[ -n $f && -f $f ]] && tail -n 60 "$f" >&2 && break; done
exit 125
