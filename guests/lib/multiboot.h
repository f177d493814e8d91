/* Multiboot v1 information structure, as far as these guests need it. */
#ifndef GUEST_MULTIBOOT_H
#define GUEST_MULTIBOOT_H

#include <stdint.h>

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002

/* Bits of multiboot_info.flags saying which fields are valid. */
#define MULTIBOOT_INFO_MEMORY   (1u << 0)   /* mem_lower, mem_upper */
#define MULTIBOOT_INFO_CMDLINE  (1u << 2)
#define MULTIBOOT_INFO_MMAP     (1u << 6)

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;      /* KiB below 1 MiB */
    uint32_t mem_upper;      /* KiB of contiguous RAM from 1 MiB */
    uint32_t boot_device;
    uint32_t cmdline;        /* physical address of a NUL-terminated string */
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;    /* bytes */
    uint32_t mmap_addr;
    /* drives, config table, loader name, APM, VBE follow; unused here. */
} __attribute__((packed));

/* 'size' does not count itself: the next entry is at (char *)e + e->size + 4. */
struct multiboot_mmap_entry {
    uint32_t size;
    uint64_t addr;
    uint64_t len;
    uint32_t type;           /* 1 = available RAM */
} __attribute__((packed));

#define MULTIBOOT_MEMORY_AVAILABLE 1

/* The guests run identity-mapped, so a physical address is a pointer. */
static inline const struct multiboot_info *multiboot_info(uint32_t mbi)
{
    return (const struct multiboot_info *)(uintptr_t)mbi;
}

/* The command line, or "" if the loader gave none. */
static inline const char *multiboot_cmdline(uint32_t mbi)
{
    const struct multiboot_info *mi = multiboot_info(mbi);

    if (!mbi || !(mi->flags & MULTIBOOT_INFO_CMDLINE) || !mi->cmdline)
        return "";
    return (const char *)(uintptr_t)mi->cmdline;
}

#endif
