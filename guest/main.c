/* The ringzero test guest: checks what the VMM hands a Linux-protocol
 * kernel, reports on COM1 and powers off through ACPI S5. */
#include "bootparams.h"
#include "guest.h"
#include "io.h"

#define PVPANIC_PORT 0x505
#define PVPANIC_PANICKED 0x01
#define I8042_CMD_PORT 0x64
#define I8042_CMD_RESET 0xfe
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_EN (1u << 13)
/* Used only when the ACPI tables could not tell (ringzero's layout.h). */
#define FALLBACK_PM1A_CNT 0x604
#define FALLBACK_SLP_TYP 5
/* rzt.mode=echo: at most this many bytes. While waiting for each byte the
 * guest gives up after ECHO_WAIT_TSC TSC cycles (10 s at 2 GHz, 5-20 s for
 * the TSC rates of current x86 parts) or ECHO_POLLS_PER_BYTE reads of the
 * LSR (each one an I/O exit; ~40 us each under this host's emulating KVM),
 * whichever comes first. */
#define ECHO_MAX_BYTES 4096
#define ECHO_WAIT_TSC 20000000000ull
#define ECHO_POLLS_PER_BYTE 10000000u
/* rzt.mode=reset: pause loops to wait for the reset to land. */
#define RESET_WAIT_SPINS 1000

__attribute__((noreturn)) static void power_off(struct ctx* c) {
  uint16_t port = c->have_pm1a_cnt ? c->pm1a_cnt : FALLBACK_PM1A_CNT;
  uint8_t typ = c->have_slp_typ ? c->slp_typ_s5 : FALLBACK_SLP_TYP;
  if (!c->have_pm1a_cnt || !c->have_slp_typ) {
    say("poweroff: no ACPI data, falling back to PM1a_CNT 0x%x SLP_TYP %u",
        port, typ);
  } else {
    say("poweroff: S5 via PM1a_CNT 0x%x, SLP_TYP %u", port, typ);
  }
  outw(port, (uint16_t)((unsigned)typ << PM1_CNT_SLP_TYP_SHIFT | PM1_CNT_SLP_EN));
  say("poweroff did not take effect; halting");
  halt_forever();
}

/* Failure exit: pvpanic first (so the VMM reports a panic), then S5. */
__attribute__((noreturn)) static void finish(struct ctx* c) {
  if (c->failures == 0) {
    say("PASS");
  } else {
    say("FAILED %u checks", c->failures);
    outb(PVPANIC_PORT, PVPANIC_PANICKED);
  }
  power_off(c);
}

static const char* mode_name(enum rzt_mode m) {
  switch (m) {
    case MODE_CHECK: return "check";
    case MODE_RESET: return "reset";
    case MODE_TRIPLEFAULT: return "triplefault";
    case MODE_PANIC: return "panic";
    case MODE_HANG: return "hang";
    case MODE_ECHO: return "echo";
  }
  return "?";
}

static char upper(uint8_t ch) {
  return (char)(ch >= 'a' && ch <= 'z' ? ch - 'a' + 'A' : ch);
}

__attribute__((noreturn)) static void run_echo(struct ctx* c) {
  /* The power-off port and SLP_TYP come from ACPI; look them up quietly. */
  c->quiet = 1;
  check_acpi(c);
  c->quiet = 0;
  c->checks = c->failures = 0;
  say("echo: ready");
  uint32_t n = 0;
  for (;;) {
    uint8_t ch;
    uint64_t t0 = rdtsc();
    if (!serial_getc(ECHO_WAIT_TSC, ECHO_POLLS_PER_BYTE, &ch)) {
      serial_putc('\n');
      check_fail(c, "echo", "no input for %lu TSC cycles after %u bytes",
                 (unsigned long)(rdtsc() - t0), n);
      finish(c);
    }
    if (ch == '\n' || ch == '\r') break;
    serial_putc(upper(ch));
    if (++n >= ECHO_MAX_BYTES) {
      serial_putc('\n');
      check_fail(c, "echo", "no newline within %u bytes", ECHO_MAX_BYTES);
      finish(c);
    }
  }
  serial_putc('\n');
  say("echo: done, %u bytes", n);
  finish(c);
}

__attribute__((noreturn)) void rz_main(uint64_t zp_addr) {
  /* In .bss, which entry.S clears with one `rep stosb`. Clearing this 4 KiB
   * context on the stack with memset() (a byte loop, ~17000 instructions)
   * cost about 10 ms on an emulating KVM before the first line came out. */
  static struct ctx c;
  c.zp_addr = zp_addr;
  if (zp_addr != 0 && zp_addr + ZP_SIZE <= 3 * GIB) c.zp = phys(zp_addr);

  say("start, boot_params at 0x%lx", (unsigned long)zp_addr);
  cmdline_find(&c);
  cmdline_parse(&c);
  say("mode %s", mode_name(c.mode));

  switch (c.mode) {
    case MODE_CHECK:
      check_zero_page(&c);
      check_cmdline(&c);
      check_e820(&c);
      check_acpi(&c);
      finish(&c);
    case MODE_RESET:
      outb(I8042_CMD_PORT, I8042_CMD_RESET);
      for (int i = 0; i < RESET_WAIT_SPINS; i++) cpu_pause();
      check_fail(&c, "reset", "the i8042 reset (0xfe to port 0x64) did not take effect");
      finish(&c);
    case MODE_TRIPLEFAULT:
      rz_triple_fault();
    case MODE_PANIC:
      outb(PVPANIC_PORT, PVPANIC_PANICKED);
      say("pvpanic did not stop the VM; halting");
      halt_forever();
    case MODE_HANG:
      for (;;) cpu_pause();
    case MODE_ECHO:
      run_echo(&c);
  }
  halt_forever();
}
