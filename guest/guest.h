/* Shared declarations of the ringzero test guest (freestanding C, x86-64). */
#ifndef RZT_GUEST_H
#define RZT_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

/* --- lib.c: the few libc pieces gcc may call, and string helpers -------- */
void* memset(void* d, int c, size_t n);
void* memcpy(void* d, const void* s, size_t n);
void* memmove(void* d, const void* s, size_t n);
int memcmp(const void* a, const void* b, size_t n);
int str_starts(const char* s, size_t n, const char* prefix);
/* Parses a decimal number from s[0..n); returns 0 if it is not one (or
 * overflows). */
int parse_u64(const char* s, size_t n, uint64_t* out);

/* Little-endian loads from byte buffers (guest tables are byte arrays). */
static inline uint8_t ld8(const volatile uint8_t* p) { return p[0]; }
static inline uint16_t ld16(const volatile uint8_t* p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t ld32(const volatile uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}
static inline uint64_t ld64(const volatile uint8_t* p) {
  return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
}
/* Guest-physical address to pointer: the loader identity-maps 0..4 GiB. */
static inline const volatile uint8_t* phys(uint64_t addr) {
  return (const volatile uint8_t*)(uintptr_t)addr;
}

/* --- serial.c: COM1 output and input ----------------------------------- */
void serial_putc(char c);
/* Returns 1 and stores a byte when one arrives before `tsc_cycles` TSC
 * cycles and `polls` LSR reads, whichever bound comes first. */
int serial_getc(uint64_t tsc_cycles, uint32_t polls, uint8_t* out);
/* Minimal printf: %s %c %d %u %x with an optional l/ll size, %%. */
void vprint(const char* fmt, va_list ap);
void print(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
/* One "rz-test-guest: ..." line. */
void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

/* --- The run's state: no globals, one context passed around ------------ */
enum rzt_mode {
  MODE_CHECK = 0,
  MODE_RESET,
  MODE_TRIPLEFAULT,
  MODE_PANIC,
  MODE_HANG,
  MODE_ECHO,
};

struct ctx {
  const volatile uint8_t* zp; /* boot_params, NULL if unusable */
  uint64_t zp_addr;

  /* A copy of the command line, and what it asked for. */
  uint64_t cmdline_addr;
  char cmdline[RZT_CMDLINE_SIZE + 1];
  uint32_t cmdline_len;
  int cmdline_found;      /* pointer usable and NUL within cmdline_size */
  int have_mem, have_cpus;
  uint64_t mem_mib, cpus;
  enum rzt_mode mode;
  unsigned bad_options;   /* unknown rzt.* keys or unparsable values */

  /* Found while checking ACPI; used for the power-off. */
  int have_pm1a_cnt;
  uint16_t pm1a_cnt;
  int have_slp_typ;
  uint8_t slp_typ_s5;

  unsigned checks, failures;
  int quiet; /* suppress "ok" lines (FAIL lines always print) */
};

/* Check reporting: each check ends in exactly one of these. */
void check_ok(struct ctx* c, const char* what, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
void check_fail(struct ctx* c, const char* what, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- cmdline.c ---------------------------------------------------------- */
void cmdline_find(struct ctx* c);   /* locates and echoes it */
void cmdline_parse(struct ctx* c);  /* rzt.* options */
void check_cmdline(struct ctx* c);

/* --- bootparams.c ------------------------------------------------------- */
void check_zero_page(struct ctx* c);
void check_e820(struct ctx* c);
/* 1 if [addr, addr+len) overlaps a type-1 (usable RAM) E820 entry. */
int e820_overlaps_ram(const struct ctx* c, uint64_t addr, uint64_t len);
/* 1 if [addr, addr+len) lies inside one E820 entry of any type. */
int e820_contains(const struct ctx* c, uint64_t addr, uint64_t len);
/* End of the E820 entry (any type) holding addr, 0 if none does. */
uint64_t e820_entry_end(const struct ctx* c, uint64_t addr);

/* --- acpi.c -------------------------------------------------------------- */
void check_acpi(struct ctx* c);

/* --- entry.S ------------------------------------------------------------- */
__attribute__((noreturn)) void rz_triple_fault(void);

/* Linker-script symbols describing the image. */
extern const char _image_start[], _edata[], _end[];
extern const char rz_init_size[];

#endif
