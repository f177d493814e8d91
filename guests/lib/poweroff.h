#ifndef GUEST_POWEROFF_H
#define GUEST_POWEROFF_H

/* Clean ACPI S5 power-off through microvm's Generic Event Device. */
__attribute__((noreturn)) void poweroff(void);

#endif
