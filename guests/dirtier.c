/*
 * dirtier: stresses dirty-page tracking and checks migrations from inside
 * the guest. Pass after pass, as fast as it can, it stamps every 4 KiB page
 * of a RAM range with (pass, page index), and verifies the stamps on
 * request. A page a migration failed to copy keeps an older pass. With
 * hold=1 it stamps the range once and then only waits, still verifying on
 * request: RAM full of data that no longer changes.
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
#include "lib/tick.h"
#include "lib/usermode.h"

#define PAGE_SIZE       4096ULL
/* 16 MiB: far above everything the guest uses (image, stacks and tables
 * below 0x120000, all in .bss or entry.S's fixed areas). */
#define DEFAULT_START   0x1000000ULL
#define LOW_MAPPED_END  0x100000000ULL  /* entry.S identity-maps 0-4 GiB */
#define IMAGE_START     0x100000ULL     /* linker.ld: one PT_LOAD, 0x100000-0x120000 */
#define IMAGE_END       0x120000ULL

/* RAM above 4 GiB: mapped here, in 2 MiB pages, one page directory per GiB,
 * the directories in RAM below the default start (the image has no room). */
#define PDPT_ADDR       0x111000ULL     /* entry.S's PDPT: entry g maps GiB g */
#define HIGH_PD_ADDR    0xC00000ULL     /* 12 MiB */
#define MAX_MAPPED_END  0x1000000000ULL /* 64 GiB: 60 directories, 240 KiB */
#define HIGH_PD_END     (HIGH_PD_ADDR + (MAX_MAPPED_END - LOW_MAPPED_END) / 0x40000000ULL * PAGE_SIZE)
#define PTE_P           0x001ULL
#define PTE_RW          0x002ULL
#define PTE_PS          0x080ULL

/* span=1 stamps the RAM of the memory map inside [start, start+size): at
 * most this many pieces (RAM below 3 GiB and above 4 GiB make two). */
#define MAX_RANGES      8

/* "The dirtier pass port": a port no device uses (QEMU ignores it); a VMM
 * counts passes from the 4-byte OUT of the pass number. */
#define PASS_PORT       0x402

#define EXIT_BAD_RANGE     2            /* status 5 */
#define EXIT_VERIFY_FAILED 3            /* status 7 */

#define NO_PAGE         (~0ULL)

/* Written by kmain in ring 0, read in ring 3: every page is user-accessible. */
static struct {
    struct { uint64_t start, end; } range[MAX_RANGES]; /* ascending, disjoint */
    uint32_t ranges;
    uint64_t pages;
    uint64_t passes;                    /* 0: forever */
    uint64_t skip;                      /* corrupt=1: not restamped after pass 1 */
    uint64_t hold;                      /* hold=1: stamp once, then wait */
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

/*
 * The RAM of the memory map inside [lo, hi), as up to MAX_RANGES ascending
 * page-aligned pieces (adjacent entries merged). Returns how many, or -1 if
 * there are more.
 */
static int ram_pieces(const struct multiboot_info *mi, uint64_t lo, uint64_t hi)
{
    uint64_t at = lo;
    int n = 0;

    while (at < hi) {
        uint64_t end = ram_end(mi, at), next = ~0ULL;

        if (end) {
            if (end > hi)
                end = hi;
            end &= ~(PAGE_SIZE - 1);
            if (end > at) {
                if (n == MAX_RANGES)
                    return -1;
                cfg.range[n].start = at;
                cfg.range[n].end = end;
                n++;
            }
            at = end > at ? end : at + PAGE_SIZE;
            continue;
        }
        /* Not RAM: on to the lowest RAM entry that starts above. */
        if (mi->flags & MULTIBOOT_INFO_MMAP) {
            for (uint32_t off = 0; off + sizeof(struct multiboot_mmap_entry) <= mi->mmap_length;) {
                const struct multiboot_mmap_entry *e =
                    (const struct multiboot_mmap_entry *)(uintptr_t)(mi->mmap_addr + off);

                if (e->type == MULTIBOOT_MEMORY_AVAILABLE && e->addr > at && e->addr < next)
                    next = (e->addr + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
                off += e->size + 4;
            }
        }
        at = next;
    }
    return n;
}

/*
 * Identity-maps [4 GiB, end) in 2 MiB pages, cacheable, writable: one page
 * directory per GiB at HIGH_PD_ADDR, linked into entry.S's PDPT. Runs before
 * usermode_init, which makes every present entry user-accessible.
 */
static void map_high(uint64_t end)
{
    uint64_t *pdpt = (uint64_t *)(uintptr_t)PDPT_ADDR;
    uint64_t cr3;

    for (uint64_t gib = LOW_MAPPED_END >> 30; gib << 30 < end; gib++) {
        uint64_t *pd = (uint64_t *)(uintptr_t)(HIGH_PD_ADDR + (gib - (LOW_MAPPED_END >> 30)) * PAGE_SIZE);

        for (uint64_t i = 0; i < 512; i++)
            pd[i] = ((gib << 30) + (i << 21)) | PTE_P | PTE_RW | PTE_PS;
        pdpt[gib] = (uintptr_t)pd | PTE_P | PTE_RW;
    }
    __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
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
    for (uint32_t r = 0; r < cfg.ranges; r++) {
        uint64_t lo = cfg.range[r].start, hi = cfg.range[r].end;

        if (pass > 1 && cfg.skip >= lo && cfg.skip < hi) {
            stamp(lo, cfg.skip, pass);
            stamp(cfg.skip + PAGE_SIZE, hi, pass);
        } else {
            stamp(lo, hi, pass);
        }
    }
}

/*
 * hold=1, after pass 1: halts, writing nothing, and answers v (verify pass
 * 1) and q. It wakes on lib/tick.h's timer, HOLD_HZ a second, and reads the
 * console once a tick: a guest that spun here would hold a host CPU, which
 * a real guest with nothing to do does not. From ring 3 the sti and each
 * hlt trap to lib/usermode.c, which emulates them, and the tick is taken in
 * ring 0; each poll writes the ring-0 stack, a page or two.
 */
#define HOLD_HZ 10

static void verify(uint64_t pass);

static void hold(void)
{
    serial_puts("dirtier: holding\n");
    tick_start(HOLD_HZ);
    __asm__ volatile("sti");
    for (;;) {
        __asm__ volatile("hlt" : : : "memory");
        switch (serial_try_getc()) {
        case 'v':
            verify(1);
            break;
        case 'q':
            serial_puts("dirtier: quit after pass 1\n");
            poweroff();
        }
    }
}

/* Runs between passes, so every page must hold the same pass. */
static void verify(uint64_t pass)
{
    uint64_t bad = 0;

    for (uint32_t r = 0; r < cfg.ranges; r++)
    for (uint64_t a = cfg.range[r].start; a < cfg.range[r].end; a += PAGE_SIZE) {
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
        /* Said once: a host that migrates from here on finds stamped
         * pages and a guest rewriting them (before it, kmain's ring-0 setup
         * may still be running, emulated, with nothing written yet). */
        if (pass == 1)
            serial_puts("dirtier: dirtying\n");
        if (cfg.hold)
            hold();
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
    uint64_t start, size, end, span, mapped = LOW_MAPPED_END;
    int n;

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
    span = cmdline_get_num(cmd, "span", 0);

    if (start % PAGE_SIZE)
        refuse(start, size, "start is not page-aligned");
    if (!span && start >= LOW_MAPPED_END)
        refuse(start, size, "start is above 4 GiB (span=1 reaches RAM there)");
    end = ram_end(mi, start);
    if (!end)
        refuse(start, size, "start is not in RAM");
    if (span) {
        /* Every RAM page from start: up to start+size, or (size 0) to the
         * end of the memory map's RAM, mapped up to 64 GiB. */
        uint64_t hi = size ? start + size : MAX_MAPPED_END;

        if (hi < start || hi > MAX_MAPPED_END)
            refuse(start, size, "range reaches past 64 GiB");
        n = ram_pieces(mi, start, hi);
        if (n <= 0)
            refuse(start, size, n < 0 ? "range crosses too many holes" : "range holds no RAM");
        cfg.ranges = (uint32_t)n;
        if (cfg.range[n - 1].end > LOW_MAPPED_END) {
            if (start < HIGH_PD_END && cfg.range[n - 1].end > HIGH_PD_ADDR)
                refuse(start, size, "range overlaps the page directories for RAM above 4 GiB (0xc00000-0xc3bfff)");
            mapped = (cfg.range[n - 1].end + 0x3fffffffULL) & ~0x3fffffffULL;
            map_high(mapped);
        }
    } else {
        if (end > LOW_MAPPED_END)
            end = LOW_MAPPED_END;
        end &= ~(PAGE_SIZE - 1);
        if (!size)
            size = end - start;         /* the whole RAM range */
        size &= ~(PAGE_SIZE - 1);
        if (!size || start + size > end || start + size < start)
            refuse(start, size, "range is not all RAM below 4 GiB (span=1 crosses holes)");
        cfg.ranges = 1;
        cfg.range[0].start = start;
        cfg.range[0].end = start + size;
    }
    if (start < IMAGE_END && cfg.range[cfg.ranges - 1].end > IMAGE_START)
        refuse(start, size, "range overlaps the guest image");

    cfg.pages = 0;
    for (uint32_t r = 0; r < cfg.ranges; r++)
        cfg.pages += (cfg.range[r].end - cfg.range[r].start) / PAGE_SIZE;
    cfg.passes = cmdline_get_num(cmd, "passes", 0);
    cfg.hold = cmdline_get_num(cmd, "hold", 0);
    /* Test switch: one page (the middle one of the first piece) keeps its
     * pass-1 stamp, as if a migration had lost its later writes, so verify
     * after pass >= 2 fails. */
    cfg.skip = cmdline_get_num(cmd, "corrupt", 0)
             ? cfg.range[0].start + (cfg.range[0].end - cfg.range[0].start) / PAGE_SIZE / 2 * PAGE_SIZE
             : NO_PAGE;

    serial_puts("dirtier: start=");
    serial_put_hex(cfg.range[0].start);
    serial_puts(" size=");
    serial_put_hex(cfg.pages * PAGE_SIZE);
    serial_puts(" pages=");
    serial_put_dec(cfg.pages);
    if (cfg.ranges > 1 || mapped > LOW_MAPPED_END) {
        serial_puts(" pieces=");
        serial_put_dec(cfg.ranges);
        serial_puts(" end=");
        serial_put_hex(cfg.range[cfg.ranges - 1].end);
    }
    serial_putc('\n');

    usermode_init();
    usermode_enter(run, 0);
}
