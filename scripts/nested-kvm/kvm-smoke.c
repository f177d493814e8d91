// Minimal /dev/kvm smoke test + exit-rate benchmark.
// Build: gcc -O2 -static -o kvm-smoke kvm-smoke.c   (static so it runs anywhere)
// Usage: kvm-smoke [N]   N = number of `out` exits for the benchmark (default 100000)
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "FAIL: " __VA_ARGS__); fprintf(stderr, " (errno=%d %s)\n", errno, strerror(errno)); exit(1);} } while (0)

static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec + ts.tv_nsec / 1e9; }

struct vm { int vm, vcpu; struct kvm_run *run; uint8_t *mem; };

static void setup_vcpu(int kvm, struct vm *v, const uint8_t *code, size_t len) {
    v->vm = ioctl(kvm, KVM_CREATE_VM, 0);
    CHECK(v->vm >= 0, "KVM_CREATE_VM");
    v->mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(v->mem != MAP_FAILED, "mmap");
    memcpy(v->mem, code, len);
    struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = 4096, .userspace_addr = (uintptr_t)v->mem };
    CHECK(ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r) == 0, "KVM_SET_USER_MEMORY_REGION");
    v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0);
    CHECK(v->vcpu >= 0, "KVM_CREATE_VCPU");
    int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    CHECK(sz > 0, "KVM_GET_VCPU_MMAP_SIZE");
    v->run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    CHECK(v->run != MAP_FAILED, "mmap kvm_run");
    struct kvm_sregs s;
    CHECK(ioctl(v->vcpu, KVM_GET_SREGS, &s) == 0, "KVM_GET_SREGS");
    s.cs.base = 0; s.cs.selector = 0;
    CHECK(ioctl(v->vcpu, KVM_SET_SREGS, &s) == 0, "KVM_SET_SREGS");
    struct kvm_regs regs = { .rip = 0, .rflags = 2 };
    CHECK(ioctl(v->vcpu, KVM_SET_REGS, &regs) == 0, "KVM_SET_REGS");
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    CHECK(kvm >= 0, "open /dev/kvm");
    int api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    printf("KVM_GET_API_VERSION = %d\n", api);
    CHECK(api == 12, "api version %d != 12", api);

    struct { const char *name; long cap; } caps[] = {
        { "KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP },
        { "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 },
        { "KVM_CAP_IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT },
        { "KVM_CAP_IOEVENTFD", KVM_CAP_IOEVENTFD },
        { "KVM_CAP_IRQFD", KVM_CAP_IRQFD },
        { "KVM_CAP_USER_MEMORY", KVM_CAP_USER_MEMORY },
        { "KVM_CAP_PIT2", KVM_CAP_PIT2 },
    };
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
        int r = ioctl(kvm, KVM_CHECK_EXTENSION, caps[i].cap);
        printf("%-36s = %d\n", caps[i].name, r);
        if (r <= 0) failures++;
    }

    // Test 1: mov $0x3f8,%dx; mov $'K',%al; out %al,(%dx); hlt
    static const uint8_t code1[] = { 0xba, 0xf8, 0x03, 0xb0, 'K', 0xee, 0xf4 };
    struct vm v;
    setup_vcpu(kvm, &v, code1, sizeof code1);
    // irqchip + PIT on a fresh VM (must be created before vCPUs, so use a second VM)
    {
        int vm2 = ioctl(kvm, KVM_CREATE_VM, 0);
        CHECK(vm2 >= 0, "KVM_CREATE_VM (2)");
        int r = ioctl(vm2, KVM_CREATE_IRQCHIP, 0);
        printf("KVM_CREATE_IRQCHIP                   = %s\n", r == 0 ? "ok" : strerror(errno));
        if (r) failures++;
        struct kvm_pit_config pit = { .flags = 0 };
        r = ioctl(vm2, KVM_CREATE_PIT2, &pit);
        printf("KVM_CREATE_PIT2                      = %s\n", r == 0 ? "ok" : strerror(errno));
        if (r) failures++;
        close(vm2);
    }
    CHECK(ioctl(v.vcpu, KVM_RUN, 0) == 0, "KVM_RUN (1)");
    CHECK(v.run->exit_reason == KVM_EXIT_IO, "expected KVM_EXIT_IO, got exit_reason %u", v.run->exit_reason);
    CHECK(v.run->io.direction == KVM_EXIT_IO_OUT && v.run->io.port == 0x3f8 && v.run->io.size == 1, "unexpected io exit");
    char c = *((char *)v.run + v.run->io.data_offset);
    printf("guest wrote byte '%c' to port 0x%x\n", c, v.run->io.port);
    CHECK(c == 'K', "wrong byte");
    CHECK(ioctl(v.vcpu, KVM_RUN, 0) == 0, "KVM_RUN (2)");
    CHECK(v.run->exit_reason == KVM_EXIT_HLT, "expected KVM_EXIT_HLT, got %u", v.run->exit_reason);
    printf("got KVM_EXIT_HLT\n");

    // Test 2: exit-rate benchmark: mov $0x3f8,%dx; mov $n,%ecx; 1: out %al,(%dx); loop 1b (addr32); hlt
    //   ba f8 03            mov $0x3f8,%dx
    //   66 b9 NN NN NN NN   mov $n,%ecx
    //   ee                  out %al,(%dx)
    //   67 e2 fc            addr32 loop -> out   (uses ECX)
    //   f4                  hlt
    uint8_t code2[] = { 0xba, 0xf8, 0x03, 0x66, 0xb9, 0, 0, 0, 0, 0xee, 0x67, 0xe2, 0xfc, 0xf4 };
    uint32_t n32 = (uint32_t)n;
    memcpy(code2 + 5, &n32, 4);
    struct vm b;
    setup_vcpu(kvm, &b, code2, sizeof code2);
    long exits = 0;
    double t0 = now();
    for (;;) {
        CHECK(ioctl(b.vcpu, KVM_RUN, 0) == 0, "KVM_RUN (bench)");
        if (b.run->exit_reason == KVM_EXIT_IO) { exits++; continue; }
        if (b.run->exit_reason == KVM_EXIT_HLT) break;
        CHECK(0, "unexpected exit_reason %u in bench", b.run->exit_reason);
    }
    double dt = now() - t0;
    printf("bench: %ld IO exits in %.3f s = %.0f exits/s (%.2f us/exit)\n", exits, dt, exits / dt, dt * 1e6 / exits);
    CHECK(exits == n, "expected %ld exits, got %ld", n, exits);
    // Test 3: 64-bit long mode with paging (exercises nested paging in L1):
    //   mov $0x3f8,%dx; mov $'L',%al; out %al,(%dx); movl $0x12345678,0x5000; hlt
    {
        int vm3 = ioctl(kvm, KVM_CREATE_VM, 0);
        CHECK(vm3 >= 0, "KVM_CREATE_VM (3)");
        size_t msz = 0x10000;
        uint8_t *m = mmap(NULL, msz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        CHECK(m != MAP_FAILED, "mmap (3)");
        struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = msz, .userspace_addr = (uintptr_t)m };
        CHECK(ioctl(vm3, KVM_SET_USER_MEMORY_REGION, &r) == 0, "KVM_SET_USER_MEMORY_REGION (3)");
        uint64_t *pml4 = (uint64_t *)(m + 0x1000), *pdpt = (uint64_t *)(m + 0x2000), *pd = (uint64_t *)(m + 0x3000);
        pml4[0] = 0x2000 | 3; pdpt[0] = 0x3000 | 3; pd[0] = 0 | 0x83; // 2 MiB identity page
        static const uint8_t code3[] = { 0x66, 0xba, 0xf8, 0x03, 0xb0, 'L', 0xee,
            0xc7, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, 0xf4 };
        memcpy(m + 0x4000, code3, sizeof code3);
        int vcpu = ioctl(vm3, KVM_CREATE_VCPU, 0);
        CHECK(vcpu >= 0, "KVM_CREATE_VCPU (3)");
        int sz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        struct kvm_run *run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        CHECK(run != MAP_FAILED, "mmap kvm_run (3)");
        struct kvm_sregs s3;
        CHECK(ioctl(vcpu, KVM_GET_SREGS, &s3) == 0, "KVM_GET_SREGS (3)");
        struct kvm_segment cs = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
        struct kvm_segment ds = cs; ds.type = 3; ds.selector = 16; ds.l = 0; ds.db = 1;
        s3.cs = cs; s3.ds = s3.es = s3.fs = s3.gs = s3.ss = ds;
        s3.cr3 = 0x1000; s3.cr4 = 0x20; s3.cr0 = 0x80000033; s3.efer = 0x500;
        CHECK(ioctl(vcpu, KVM_SET_SREGS, &s3) == 0, "KVM_SET_SREGS (3)");
        struct kvm_regs regs = { .rip = 0x4000, .rflags = 2, .rsp = 0x8000 };
        CHECK(ioctl(vcpu, KVM_SET_REGS, &regs) == 0, "KVM_SET_REGS (3)");
        CHECK(ioctl(vcpu, KVM_RUN, 0) == 0, "KVM_RUN (3a)");
        CHECK(run->exit_reason == KVM_EXIT_IO && *((char *)run + run->io.data_offset) == 'L', "long mode: expected IO 'L', exit_reason %u", run->exit_reason);
        CHECK(ioctl(vcpu, KVM_RUN, 0) == 0, "KVM_RUN (3b)");
        CHECK(run->exit_reason == KVM_EXIT_HLT, "long mode: expected HLT, got %u", run->exit_reason);
        uint32_t val; memcpy(&val, m + 0x5000, 4);
        CHECK(val == 0x12345678, "long mode: guest store not visible (0x%x)", val);
        printf("long mode + paging guest: IO 'L', store visible, HLT ok\n");
        close(vcpu); close(vm3);
    }
    if (failures) { printf("SMOKE: %d capability/irqchip checks FAILED\n", failures); return 2; }
    printf("SMOKE: OK\n");
    return 0;
}
