/*
 * Multiboot v1 entry: 32-bit protected mode -> 64-bit long mode -> kmain().
 *
 * The loader only guarantees flat 4 GiB segments, CR0.PE=1, paging off,
 * interrupts off and A20 on. GDTR may point anywhere, so we bring our own GDT
 * and do not reload a segment register until it is in place.
 */

#define MB_MAGIC      0x1BADB002
#define MB_FLAGS      0x00000002      /* bit 1: give us mem_lower/mem_upper */

#define PML4          0x110000
#define PDPT          0x111000
#define PD0           0x112000        /* 4 PDs, one per GiB */
#define PT_END        0x116000
#define STACK_TOP     0x120000

#define PTE_P         0x001
#define PTE_RW        0x002
#define PTE_PWT       0x008
#define PTE_PCD       0x010
#define PTE_PS        0x080           /* 2 MiB page */

#define CR0_PE        (1 << 0)
#define CR0_ET        (1 << 4)
#define CR0_NE        (1 << 5)
#define CR0_WP        (1 << 16)
#define CR0_PG        (1 << 31)
#define CR4_PAE       (1 << 5)
#define MSR_EFER      0xC0000080
#define EFER_LME      (1 << 8)

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .section .pagetables, "aw", @nobits
        .space PT_END - PML4

        .section .stack, "aw", @nobits
        .space 0x4000

        .section .text.boot, "ax"
        .code32
        .global _start
_start:
        cli
        cld
        /* EDI/ESI are kmain's first two SysV arguments: keep magic and MBI there. */
        movl %eax, %edi
        movl %ebx, %esi
        movl $STACK_TOP, %esp

        /* Zero .bss and the page tables: no loader is required to do it for us. */
        xorl %eax, %eax
        movl $__bss_start, %ebx
        movl $__bss_end, %ecx
        subl %ebx, %ecx
        pushl %edi
        movl %ebx, %edi
        rep stosb
        movl $PML4, %edi
        movl $(PT_END - PML4) / 4, %ecx
        rep stosl
        popl %edi

        movl $(PDPT | PTE_P | PTE_RW), PML4
        movl $(PD0 + 0x0000 | PTE_P | PTE_RW), PDPT + 0
        movl $(PD0 + 0x1000 | PTE_P | PTE_RW), PDPT + 8
        movl $(PD0 + 0x2000 | PTE_P | PTE_RW), PDPT + 16
        movl $(PD0 + 0x3000 | PTE_P | PTE_RW), PDPT + 24

        /*
         * 2048 x 2 MiB identity map of 0-4 GiB. The last GiB holds MMIO
         * (LAPIC, IOAPIC, the ACPI GED), so it is mapped uncached.
         */
        xorl %ecx, %ecx
1:      movl %ecx, %eax
        shll $21, %eax
        orl $(PTE_P | PTE_RW | PTE_PS), %eax
        cmpl $1536, %ecx
        jb 2f
        orl $(PTE_PCD | PTE_PWT), %eax
2:      movl %eax, PD0(,%ecx,8)
        incl %ecx
        cmpl $2048, %ecx
        jb 1b

        /* Explicit values rather than read-modify-write: trust no prior state. */
        movl $CR4_PAE, %eax
        movl %eax, %cr4
        movl $PML4, %eax
        movl %eax, %cr3
        movl $MSR_EFER, %ecx
        rdmsr
        orl $EFER_LME, %eax
        wrmsr
        movl $(CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_PE), %eax
        movl %eax, %cr0

        lgdt gdt_ptr
        ljmp $0x08, $long_mode

        .code64
long_mode:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        xorw %ax, %ax
        movw %ax, %fs
        movw %ax, %gs
        movq $STACK_TOP, %rsp
        /* Upper halves of GPRs are undefined after the mode switch. */
        movl %edi, %edi
        movl %esi, %esi
        call kmain
        /* kmain should never return; if it does, stop quietly. */
3:      cli
        hlt
        jmp 3b

        .section .rodata
        .align 8
gdt:
        .quad 0                       /* null */
        .quad 0x00AF9A000000FFFF      /* 0x08: 64-bit code, DPL0 */
        .quad 0x00CF92000000FFFF      /* 0x10: flat data */
gdt_end:
        .align 4
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt

        .section .note.GNU-stack, "", @progbits
