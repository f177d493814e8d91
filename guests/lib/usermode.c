#include "usermode.h"
#include "exit.h"
#include "io.h"
#include "serial.h"
#include "tick.h"

#define PTE_P     0x001ULL
#define PTE_US    0x004ULL
#define PTE_PS    0x080ULL
#define PTE_ADDR  0x000ffffffffff000ULL

/* The 64-bit TSS: only RSP0 matters, the stack the CPU switches to when an
 * exception takes it from ring 3 to ring 0. */
struct tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

/* What usermode.S leaves on the kernel stack, lowest address first: the
 * general registers it pushed, then the vector, error code and the CPU's
 * interrupt frame. usermode.S reloads all of it when usermode_trap returns. */
struct usermode_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

#define RFLAGS_IF    0x200ULL

struct table_ptr {
    uint16_t limit;
    uint64_t base;
} __attribute__((packed));

struct idt_gate {
    uint64_t lo, hi;
};

/* The 32 exceptions, then lib/tick.h's two interrupt vectors. */
#define IDT_VECTORS 34

/* From usermode.S. */
extern const uint64_t usermode_exc_stubs[IDT_VECTORS];
extern void usermode_returned(void);
__attribute__((noreturn)) void usermode_iret(uint64_t rip, void *arg, uint64_t rsp);
void usermode_trap(struct usermode_frame *f);

static struct tss64 tss;
static struct idt_gate idt[IDT_VECTORS];
static uint8_t kernel_stack[4096] __attribute__((aligned(16)));
static uint8_t user_stack[8192] __attribute__((aligned(16)));

/*
 * In .data, not .rodata: ltr sets the busy bit in the TSS descriptor. The
 * kernel descriptors are entry.S's, so CS/SS loaded from its GDT stay valid.
 * The TSS descriptor (16 bytes) holds a link-time address split into fields,
 * which C cannot express statically: filled in by usermode_init().
 */
static uint64_t gdt[7] = {
    0,
    0x00AF9A000000FFFFULL,      /* 0x08: 64-bit code, DPL0 */
    0x00CF92000000FFFFULL,      /* 0x10: flat data, DPL0 */
    0x00CFF2000000FFFFULL,      /* 0x18: flat data, DPL3 (user SS) */
    0x00AFFA000000FFFFULL,      /* 0x20: 64-bit code, DPL3 */
    0, 0,                       /* 0x28: 64-bit TSS */
};

/* Sets U/S on every present entry below table. A page is user-accessible
 * only if U/S is set at every level of its walk. */
static void set_user_bit(uint64_t *table, int level)
{
    for (int i = 0; i < 512; i++) {
        uint64_t e = table[i];

        if (!(e & PTE_P))
            continue;
        table[i] = e | PTE_US;
        /* PS (a large page) ends the walk; the bit is reserved (0) in PML4Es. */
        if (level > 1 && !(e & PTE_PS))
            set_user_bit((uint64_t *)(uintptr_t)(e & PTE_ADDR), level - 1);
    }
}

void usermode_init(void)
{
    uint64_t base = (uintptr_t)&tss, limit = sizeof(tss) - 1, cr3;
    struct table_ptr gdtr = { sizeof(gdt) - 1, (uintptr_t)gdt };
    struct table_ptr idtr = { sizeof(idt) - 1, (uintptr_t)idt };

    tss.rsp[0] = (uintptr_t)(kernel_stack + sizeof(kernel_stack));
    /* An I/O bitmap offset past the limit means "no bitmap": IOPL=3 already
     * grants ring 3 every port, and this way nothing can take it back. */
    tss.iomap_base = sizeof(tss);
    gdt[TSS_SEL / 8] = (limit & 0xffff) | (base & 0xffffff) << 16
                     | 0x89ULL << 40                /* present, DPL0, 64-bit TSS (available) */
                     | ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
    gdt[TSS_SEL / 8 + 1] = base >> 32;

    for (int v = 0; v < IDT_VECTORS; v++) {
        uint64_t h = usermode_exc_stubs[v];

        /* Present, DPL0 interrupt gate: "int n" from ring 3 is a #GP, and
         * IF stays 0 in the handler. */
        idt[v].lo = (h & 0xffff) | (uint64_t)KERNEL_CS << 16 | 0x8EULL << 40
                  | ((h >> 16) & 0xffff) << 48;
        idt[v].hi = h >> 32;
    }

    __asm__ volatile("lgdt %0" : : "m"(gdtr) : "memory");
    __asm__ volatile("ltr %w0" : : "r"(TSS_SEL) : "memory");
    __asm__ volatile("lidt %0" : : "m"(idtr) : "memory");

    /* The tables are identity-mapped, so their physical addresses are
     * pointers. Reloading CR3 then flushes the stale (supervisor) TLB entries. */
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    set_user_bit((uint64_t *)(uintptr_t)(cr3 & PTE_ADDR), 4);
    __asm__ volatile("mov %0, %%cr3" : : "r"(cr3) : "memory");
}

void usermode_enter(void (*fn)(void *), void *arg)
{
    uint64_t *top = (uint64_t *)(user_stack + sizeof(user_stack));

    /* A fake return address, as a call would have pushed: fn starts with
     * RSP = 8 mod 16 as the ABI expects, and a return traps. */
    top[-1] = (uintptr_t)usermode_returned;
    usermode_iret((uintptr_t)fn, arg, (uintptr_t)&top[-1]);
}

/*
 * Does, in ring 0, the instruction at f->rip that IOPL=3 entitles ring 3 to
 * but that raised #GP anyway: in/out (byte, word, dword; immediate port or
 * DX) and cli/sti. Returns 0 for anything else. Why: a KVM host that runs
 * CPL3 natively (kvm_pvm) runs it in the host's user mode, where the host's
 * IOPL of 0, not the guest's, decides; the guest then gets the #GP, and its
 * frame shows IOPL=0 (seen: RFLAGS 0x10046 after usermode_iret set 0x3002).
 * Ring 3 here is only ever entered through usermode_iret with IOPL=3, so a
 * #GP from it on these instructions is always that host's doing. Under a
 * host that honours IOPL this never runs. Each use costs an exception entry
 * and this decode at CPL0, so hot loops should not do port I/O.
 */
static int emulate_iopl_insn(struct usermode_frame *f)
{
    const uint8_t *p = (const uint8_t *)(uintptr_t)f->rip;
    unsigned n = 0, size = 4;
    uint16_t port;
    uint8_t op;

    if (f->vector != 13 || (f->cs & 3) != 3)
        return 0;
    if (p[n] == 0x66) {
        size = 2;
        n++;
    }
    while ((p[n] & 0xf0) == 0x40)       /* REX: not even W widens port I/O */
        n++;
    op = p[n++];
    switch (op) {
    case 0xfa:
        f->rflags &= ~RFLAGS_IF;
        f->rip += n;
        return 1;
    case 0xfb:
        f->rflags |= RFLAGS_IF;
        f->rip += n;
        return 1;
    case 0xe4: case 0xe5: case 0xe6: case 0xe7:
        port = p[n++];
        break;
    case 0xec: case 0xed: case 0xee: case 0xef:
        port = (uint16_t)f->rdx;
        break;
    default:
        return 0;
    }
    if (!(op & 1))
        size = 1;
    if (op & 2) {                       /* out */
        if (size == 1)
            outb(port, (uint8_t)f->rax);
        else if (size == 2)
            outw(port, (uint16_t)f->rax);
        else
            outl(port, (uint32_t)f->rax);
    } else if (size == 1) {             /* in: as the CPU, AL and AX merge, EAX zero-extends */
        f->rax = (f->rax & ~0xffULL) | inb(port);
    } else if (size == 2) {
        f->rax = (f->rax & ~0xffffULL) | inw(port);
    } else {
        f->rax = inl(port);
    }
    f->rip += n;
    return 1;
}

void usermode_trap(struct usermode_frame *f)
{
    if (f->vector == TICK_VECTOR) {
        tick_handle();
        return;
    }
    if (f->vector == SPURIOUS_VECTOR)
        return;
    if (emulate_iopl_insn(f))
        return;
    /* hlt is privileged, so ring 3's lands here: do what it meant. With
     * IF=0 (halt_forever(), e.g. after a guest_exit() no device heard)
     * nothing wakes it; with IF=1 (a ring-3 sti, emulated above) it waits
     * here for the next interrupt, taken in ring 0, then goes on after it. */
    if (f->vector == 13 && (f->cs & 3) == 3 && *(const uint8_t *)(uintptr_t)f->rip == 0xf4) {
        if (!(f->rflags & RFLAGS_IF))
            halt_forever();
        __asm__ volatile("sti; hlt; cli" : : : "memory");
        f->rip += 1;
        return;
    }
    serial_puts("usermode: exception ");
    serial_put_dec(f->vector);
    serial_puts(" err=");
    serial_put_hex(f->error);
    serial_puts(" rip=");
    serial_put_hex(f->rip);
    serial_puts(" cs=");
    serial_put_hex(f->cs);
    serial_puts(" rflags=");
    serial_put_hex(f->rflags);
    serial_puts(" rsp=");
    serial_put_hex(f->rsp);
    if (f->vector == 14) {
        uint64_t cr2;

        __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
        serial_puts(" cr2=");
        serial_put_hex(cr2);
    }
    serial_putc('\n');
    guest_exit(USERMODE_FAULT_EXIT);
}
