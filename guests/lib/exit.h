#ifndef GUEST_EXIT_H
#define GUEST_EXIT_H

#include <stdint.h>

/* Port of QEMU's isa-debug-exit (-device isa-debug-exit,iobase=0xf4,iosize=4). */
#define DEBUG_EXIT_PORT 0xf4

/* QEMU exits with status (code << 1) | 1; a VMM sees a 4-byte OUT to 0xf4. */
__attribute__((noreturn)) void guest_exit(uint32_t code);

#endif
