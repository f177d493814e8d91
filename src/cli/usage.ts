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
  --cpus N              number of vCPUs                                     [default: 1]
  --initrd PATH         initrd/initramfs for a Linux kernel (placed high, below initrd_addr_max)
  --cmdline STR         kernel command line (Linux: as given; multiboot: appended to the kernel path,
                        as QEMU does)
  --serial stdio|file:PATH
                        where the serial console goes; stdio also feeds stdin to the guest
                                                                            [default: stdio]
  --kvm PATH            the KVM device                                      [default: /dev/kvm]
  --qmp unix:PATH|tcp:HOST:PORT
                        serve QMP (QEMU's JSON control protocol) there
  --incoming tcp:HOST:PORT|defer
                        do not boot: wait for a live migration from a peer tsvmm (defer: until
                        QMP migrate-incoming names the address)

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
