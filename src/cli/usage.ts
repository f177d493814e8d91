export const USAGE = `Usage: tsvmm <command> [options]

A userspace x86-64 virtual machine monitor on KVM.

Commands:
  run KERNEL | --kernel PATH
                        boot a kernel and attach its serial console: a Linux bzImage ("HdrS" at
                        0x202), a multiboot kernel (0x1BADB002 in its first 8 KiB) or an ELF64
                        vmlinux, told apart in that order
  migrate --qmp ADDR tcp:HOST:PORT
                        live-migrate a running tsvmm (see 'tsvmm migrate --help')
  help                  show this help

Options for run:
  --mem SIZE            guest RAM, e.g. 256M, 1G (a bare number is MiB)   [default: 256M]
  --mem-prealloc        allocate all guest RAM at start, as QEMU's -mem-prealloc: a host short
                        of memory stops the VM then, not mid-run, and no later write (the
                        guest's, an incoming migration's) waits for the host to find pages
  --cpus N              number of vCPUs                                     [default: 1]
  --initrd PATH         initrd/initramfs for a Linux kernel (placed high, below initrd_addr_max)
  --cmdline STR         kernel command line (Linux: as given; multiboot: appended to the kernel path,
                        as QEMU does)
  --kernel-decompress host|guest
                        who unpacks a bzImage's compressed kernel: host (tsvmm, with xz/zstd/...,
                        cached in $TSVMM_CACHE_DIR or ~/.cache/tsvmm; the kernel then starts at
                        its link address, without KASLR) or guest (its own decompressor)
                                                                            [default: host]
  --serial stdio|file:PATH
                        where the serial console goes; stdio also feeds stdin to the guest
                                                                            [default: stdio]
  --kvm PATH            the KVM device                                      [default: /dev/kvm]
  --qmp unix:PATH|tcp:HOST:PORT
                        serve QMP (QEMU's JSON control protocol) there
  --disk PATH[,readonly]
                        a virtio-blk disk backed by the raw image PATH (repeatable)
  --net udp,local=HOST:PORT,remote=HOST:PORT[,mac=MAC]
                        a virtio-net NIC exchanging one Ethernet frame per UDP datagram
                        with remote (like QEMU's -netdev dgram)
  --net tap,ifname=NAME[,mac=MAC]
                        a virtio-net NIC on the tap device NAME (created if needed; needs
                        CAP_NET_ADMIN). Devices take microvm's virtio-mmio slots in the
                        order given (the first at 0xfeb00e00, GSI 23; the next 0xfeb00c00)
  --incoming tcp:HOST:PORT|defer
                        do not boot: wait for a live migration from a peer tsvmm (defer: until
                        QMP migrate-incoming names the address)
  --object tls-creds-x509,id=ID,dir=PATH,endpoint=server|client[,verify-peer=on|off]
                        TLS credentials for migration, as QEMU's (dir holds ca-cert.pem and
                        server-cert.pem/server-key.pem or client-cert.pem/client-key.pem); QMP
                        migrate-set-parameters tls-creds=ID uses them (the destination with
                        --incoming defer)

Global options:
  -h, --help            show this help
  -V, --version         print the version

Exit status:
  the guest's debug-exit status ((value << 1) | 1, as QEMU's isa-debug-exit, port 0xf4),
  0 when the guest powers off or resets (Linux \`reboot\`: i8042 reset, no reboot), 2 for bad
  usage or input, 4 when the host cannot run VMs (no /dev/kvm, no permission), 6 when the guest
  crashes (triple fault), 8 when a migration fails, 10 when it is cancelled, 12 when tsvmm
  migrate cannot reach QMP, 130 on Ctrl-C.

Examples:
  npx tsvmm run guests/build/hello.elf
  npx tsvmm run --kernel /boot/vmlinuz-$(uname -r) --mem 512M --cmdline "console=ttyS0"
`;
