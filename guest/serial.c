/* COM1 (16550) by polling: no interrupts anywhere in this guest. */
#include "guest.h"
#include "io.h"

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_DATA_READY 0x01
#define LSR_THR_EMPTY 0x20
/* Upper bound on LSR polls per output byte. A VMM's UART normally reports
 * THR empty at once; a missing UART reads 0xff (also "empty"). The bound
 * only matters for a UART that never drains: then bytes are dropped rather
 * than the guest hanging. */
#define TX_POLLS 100000

void serial_putc(char ch) {
  for (uint32_t i = 0; i < TX_POLLS; i++) {
    if (inb(COM1_LSR) & LSR_THR_EMPTY) break;
    cpu_pause();
  }
  outb(COM1, (uint8_t)ch);
}

int serial_getc(uint64_t tsc_cycles, uint32_t polls, uint8_t* out) {
  uint64_t start = rdtsc();
  for (uint32_t i = 0; i < polls && rdtsc() - start < tsc_cycles; i++) {
    if (inb(COM1_LSR) & LSR_DATA_READY) {
      *out = inb(COM1);
      return 1;
    }
    cpu_pause();
  }
  return 0;
}

static void put_str(const char* s) {
  if (!s) s = "(null)";
  while (*s) serial_putc(*s++);
}

static void put_num(uint64_t v, unsigned base) {
  char buf[24];
  int n = 0;
  do {
    unsigned d = (unsigned)(v % base);
    buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v && n < (int)sizeof buf);
  while (n) serial_putc(buf[--n]);
}

void vprint(const char* fmt, va_list ap) {
  for (const char* p = fmt; *p; p++) {
    if (*p != '%') {
      serial_putc(*p);
      continue;
    }
    p++;
    int longs = 0;
    while (*p == 'l') {
      longs++;
      p++;
    }
    switch (*p) {
      case 's':
        put_str(va_arg(ap, const char*));
        break;
      case 'c':
        serial_putc((char)va_arg(ap, int));
        break;
      case 'd': {
        int64_t v = longs ? va_arg(ap, long) : va_arg(ap, int);
        if (v < 0) {
          serial_putc('-');
          put_num((uint64_t)0 - (uint64_t)v, 10);
        } else {
          put_num((uint64_t)v, 10);
        }
        break;
      }
      case 'u':
      case 'x': {
        uint64_t v = longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
        put_num(v, *p == 'u' ? 10 : 16);
        break;
      }
      case '%':
        serial_putc('%');
        break;
      case '\0':
        return;
      default:
        serial_putc('?');
        break;
    }
  }
}

void print(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprint(fmt, ap);
  va_end(ap);
}

void say(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  put_str("rz-test-guest: ");
  vprint(fmt, ap);
  serial_putc('\n');
  va_end(ap);
}

void check_ok(struct ctx* c, const char* what, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  c->checks++;
  if (c->quiet) {
    va_end(ap);
    return;
  }
  put_str("rz-test-guest: ok ");
  put_str(what);
  if (fmt && *fmt) {
    put_str(" (");
    vprint(fmt, ap);
    serial_putc(')');
  }
  serial_putc('\n');
  va_end(ap);
}

void check_fail(struct ctx* c, const char* what, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  c->checks++;
  c->failures++;
  put_str("rz-test-guest: FAIL ");
  put_str(what);
  put_str(": ");
  vprint(fmt, ap);
  serial_putc('\n');
  va_end(ap);
}
