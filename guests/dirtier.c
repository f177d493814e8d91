/*
 * dirtier: stresses dirty-page tracking and checks migrations from inside
 * the guest. Pass after pass, as fast as it can, it stamps every 4 KiB page
 * of a RAM range with (pass, page index), and verifies the stamps on
 * request. A page a migration failed to copy keeps an older pass.
 *
 * kmain (ring 0) only checks the command line and prints the range; all the
 * work, printing included, runs in ring 3 because some KVM hosts emulate
 * CPL0 code instruction by instruction (see lib/usermode.h).
 */
#include "lib/cmdline.h"
#include "lib/exit.h"
#include "lib/io.h"
#include "lib/multiboot.h"
#include "lib/poweroff.h"
#include "lib/serial.h"
#include "lib/usermode.h"

#define PAGE_SIZE       4096ULL
/* 16 MiB: far above everything the guest uses (image, stacks and tables
 * below 0x120000, all in .bss or entry.S's fixed areas). */
#define DEFAULT_START   0x1000000ULL
#define MAPPED_END      0x100000000ULL  /* entry.S identity-maps 0-4 GiB only */
#define IMAGE_START     0x100000ULL     /* linker.ld: one PT_LOAD, 0x100000-0x120000 */
#define IMAGE_END       0x120000ULL

/* "The dirtier pass port": a port no device uses (QEMU ignores it); a VMM
 * counts passes from the 4-byte OUT of the pass number. */
#define PASS_PORT       0x402

#define EXIT_BAD_RANGE     2            /* status 5 */
#define EXIT_VERIFY_FAILED 3            /* status 7 */

#define NO_PAGE         (~0ULL)

/* Written by kmain in ring 0, read in ring 3: every page is user-accessible. */
static struct {
    uint64_t start, end, pages;
    uint64_t passes;                    /* 0: forever */
    uint64_t skip;                      /* corrupt=1: not restamped after pass 1 */
} cfg;

/*
 * End of the RAM that continues from addr without a hole, per the loader's
 * memory map (falling back to mem_upper), or 0 if addr is not RAM. Adjacent
 * RAM entries count as one range.
 */
static uint64_t ram_entry_end(const struct multiboot_info *mi, uint64_t addr)
{
    if (mi->flags & MULTIBOOT_INFO_MMAP) {
        for (uint32_t off = 0; off + sizeof(struct multiboot_mmap_entry) <= mi->mmap_length;) {
            const struct multiboot_mmap_entry *e =
                (const struct multiboot_mmap_entry *)(uintptr_t)(mi->mmap_addr + off);

            if (e->type == MULTIBOOT_MEMORY_AVAILABLE && addr >= e->addr && addr < e->addr + e->len)
                return e->addr + e->len;
            off += e->size + 4;
        }
        return 0;
    }
    if (mi->flags & MULTIBOOT_INFO_MEMORY) {
        uint64_t end = 0x100000 + (uint64_t)mi->mem_upper * 1024;

        if (addr >= 0x100000 && addr < end)
            return end;
    }
    return 0;
}

static uint64_t ram_end(const struct multiboot_info *mi, uint64_t addr)
{
    uint64_t end = ram_entry_end(mi, addr), next;

    while (end && (next = ram_entry_end(mi, end)) != 0)
        end = next;
    return end;
}

__attribute__((noreturn)) static void refuse(uint64_t start, uint64_t size, const char *why)
{
    serial_puts("dirtier: bad range start=");
    serial_put_hex(start);
    serial_puts(" size=");
    serial_put_hex(size);
    serial_puts(": ");
    serial_puts(why);
    serial_putc('\n');
    guest_exit(EXIT_BAD_RANGE);
}

/* ---- ring 3 from here on ---- */

/*
 * Stamps every page in [lo, hi). volatile keeps each store, in order: a
 * page of pass p is never written before every page of pass p-1.
 */
static void stamp(uint64_t lo, uint64_t hi, uint64_t pass)
{
    for (uint64_t a = lo; a < hi; a += PAGE_SIZE) {
        volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)a;

        p[0] = pass;
        p[1] = a >> 12;
    }
}

static void stamp_pass(uint64_t pass)
{
    if (pass > 1 && cfg.skip != NO_PAGE) {
        stamp(cfg.start, cfg.skip, pass);
        stamp(cfg.skip + PAGE_SIZE, cfg.end, pass);
    } else {
        stamp(cfg.start, cfg.end, pass);
    }
}

/* Runs between passes, so every page must hold the same pass. */
static void verify(uint64_t pass)
{
    uint64_t bad = 0;

    for (uint64_t a = cfg.start; a < cfg.end; a += PAGE_SIZE) {
        const volatile uint64_t *p = (const volatile uint64_t *)(uintptr_t)a;
        uint64_t found_pass = p[0], found_index = p[1];

        if (found_pass == pass && found_index == a >> 12)
            continue;
        if (bad++ == 0) {
            serial_puts("dirtier: verify FAILED at ");
            serial_put_hex(a);
            serial_puts(": pass=");
            serial_put_dec(found_pass);
            serial_puts(" index=");
            serial_put_hex(found_index);
            serial_puts(" expected pass=");
            serial_put_dec(pass);
            serial_puts(" index=");
            serial_put_hex(a >> 12);
            serial_putc('\n');
        }
    }
    if (bad) {
        serial_puts("dirtier: ");
        serial_put_dec(bad);
        serial_puts(" bad pages\n");
        guest_exit(EXIT_VERIFY_FAILED);
    }
    serial_puts("dirtier: verify ok pass=");
    serial_put_dec(pass);
    serial_puts(" pages=");
    serial_put_dec(cfg.pages);
    serial_putc('\n');
}

static void run(void *unused)
{
    (void)unused;
    for (uint64_t pass = 1;; pass++) {
        stamp_pass(pass);
        /* The volatile stores are ordered among themselves, not against
         * the OUT: a compiler barrier makes the report follow the pass. */
        __asm__ volatile("" : : : "memory");
        outl(PASS_PORT, (uint32_t)pass);
        if (pass == cfg.passes) {
            verify(pass);
            poweroff();
        }
        /* One LSR read per pass: the host's commands cost nearly nothing. */
        switch (serial_try_getc()) {
        case 'v':
            verify(pass);
            break;
        case 'q':
            serial_puts("dirtier: quit after pass ");
            serial_put_dec(pass);
            serial_putc('\n');
            poweroff();
        case 'p':
            serial_puts("dirtier: pass ");
            serial_put_dec(pass);
            serial_putc('\n');
            break;
        }
    }
}

/* ---- ring 0 ---- */

void kmain(uint32_t magic, uint32_t mbi)
{
    const struct multiboot_info *mi = multiboot_info(mbi);
    const char *cmd;
    uint64_t start, size, end;

    serial_init();
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC) {
        serial_puts("dirtier: bad multiboot magic ");
        serial_put_hex(magic);
        serial_putc('\n');
        guest_exit(EXIT_BAD_RANGE);
    }
    cmd = multiboot_cmdline(mbi);
    start = cmdline_get_num(cmd, "start", DEFAULT_START);
    size = cmdline_get_num(cmd, "size", 0);

    if (start % PAGE_SIZE)
        refuse(start, size, "start is not page-aligned");
    if (start >= MAPPED_END)
        refuse(start, size, "start is above 4 GiB");
    end = ram_end(mi, start);
    if (!end)
        refuse(start, size, "start is not in RAM");
    if (end > MAPPED_END)
        end = MAPPED_END;
    end &= ~(PAGE_SIZE - 1);
    if (!size)
        size = end - start;             /* the whole RAM range */
    size &= ~(PAGE_SIZE - 1);
    if (!size || start + size > end || start + size < start)
        refuse(start, size, "range is not all RAM below 4 GiB");
    if (start < IMAGE_END && start + size > IMAGE_START)
        refuse(start, size, "range overlaps the guest image");

    cfg.start = start;
    cfg.end = start + size;
    cfg.pages = size / PAGE_SIZE;
    cfg.passes = cmdline_get_num(cmd, "passes", 0);
    /* Test switch: one page (the middle one) keeps its pass-1 stamp, as if
     * a migration had lost its later writes, so verify after pass >= 2 fails. */
    cfg.skip = cmdline_get_num(cmd, "corrupt", 0) ? start + cfg.pages / 2 * PAGE_SIZE : NO_PAGE;

    serial_puts("dirtier: start=");
    serial_put_hex(cfg.start);
    serial_puts(" size=");
    serial_put_hex(size);
    serial_puts(" pages=");
    serial_put_dec(cfg.pages);
    serial_putc('\n');

    usermode_init();
    usermode_enter(run, 0);
}
