/* Finding, echoing and parsing the kernel command line. */
#include "bootparams.h"
#include "guest.h"

void cmdline_find(struct ctx* c) {
  c->cmdline[0] = '\0';
  c->cmdline_len = 0;
  c->cmdline_found = 0;
  if (!c->zp) return;
  uint64_t addr = ld32(c->zp + ZP_CMD_LINE_PTR) |
                  ((uint64_t)ld32(c->zp + ZP_EXT_CMD_LINE_PTR) << 32);
  c->cmdline_addr = addr;
  uint64_t max = ld32(c->zp + ZP_CMDLINE_SIZE);
  if (max == 0 || max > RZT_CMDLINE_SIZE) max = RZT_CMDLINE_SIZE;
  /* Untrusted pointer: only follow it inside memory the E820 map
   * describes, below the MMIO hole, and never past the end of that entry. */
  uint64_t end = addr < 3 * GIB ? e820_entry_end(c, addr) : 0;
  if (addr == 0 || end == 0) {
    say("cmdline: (unusable pointer 0x%lx)", (unsigned long)addr);
    return;
  }
  if (end > 3 * GIB) end = 3 * GIB;
  uint64_t limit = max + 1; /* bytes we may look at, NUL included */
  if (limit > end - addr) limit = end - addr;
  const volatile uint8_t* p = phys(addr);
  uint32_t n = 0;
  while (n < limit && p[n] != 0) {
    if (n < RZT_CMDLINE_SIZE) c->cmdline[n] = (char)p[n];
    n++;
  }
  c->cmdline_found = n < limit;
  if (n > RZT_CMDLINE_SIZE) n = RZT_CMDLINE_SIZE;
  c->cmdline[n] = '\0';
  c->cmdline_len = n;

  print("rz-test-guest: cmdline: ");
  for (uint32_t i = 0; i < n; i++) {
    char ch = c->cmdline[i];
    serial_putc(ch >= 0x20 && ch < 0x7f ? ch : '?');
  }
  serial_putc('\n');
}

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int parse_mem(const char* v, size_t n, uint64_t* mib) {
  uint64_t scale = 1;
  if (n > 0 && (v[n - 1] == 'M' || v[n - 1] == 'm')) {
    n--;
  } else if (n > 0 && (v[n - 1] == 'G' || v[n - 1] == 'g')) {
    n--;
    scale = 1024;
  }
  uint64_t x;
  /* At most 1 PiB keeps the byte count far from overflowing. */
  if (!parse_u64(v, n, &x) || x == 0 || x * scale > (1ull << 30)) return 0;
  *mib = x * scale;
  return 1;
}

struct mode_name {
  const char* name;
  enum rzt_mode mode;
};

static int parse_mode(const char* v, size_t n, enum rzt_mode* out) {
  static const struct mode_name modes[] = {
      {"check", MODE_CHECK},          {"reset", MODE_RESET},
      {"triplefault", MODE_TRIPLEFAULT}, {"panic", MODE_PANIC},
      {"hang", MODE_HANG},            {"echo", MODE_ECHO},
  };
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    const char* name = modes[i].name;
    size_t len = 0;
    while (name[len]) len++;
    if (len == n && memcmp(name, v, n) == 0) {
      *out = modes[i].mode;
      return 1;
    }
  }
  return 0;
}

static int key_is(const char* tok, size_t keylen, const char* key) {
  size_t n = 0;
  while (key[n]) n++;
  return n == keylen && memcmp(tok, key, n) == 0;
}

static void parse_option(struct ctx* c, const char* tok, size_t n) {
  if (!str_starts(tok, n, "rzt.")) return;  /* not ours */
  size_t eq = 0;
  while (eq < n && tok[eq] != '=') eq++;
  const char* val = tok + eq + 1;
  size_t vlen = eq < n ? n - eq - 1 : 0;
  int good = 0;
  if (eq == n) {
    good = 0;  /* every rzt.* option takes a value */
  } else if (key_is(tok, eq, "rzt.mem")) {
    good = parse_mem(val, vlen, &c->mem_mib);
    c->have_mem = good;
  } else if (key_is(tok, eq, "rzt.cpus")) {
    good = parse_u64(val, vlen, &c->cpus) && c->cpus >= 1 && c->cpus <= 4096;
    c->have_cpus = good;
  } else if (key_is(tok, eq, "rzt.mode")) {
    good = parse_mode(val, vlen, &c->mode);
  }
  if (!good) {
    c->bad_options++;
    print("rz-test-guest: bad option: ");
    for (size_t i = 0; i < n && i < 80; i++) {
      char ch = tok[i];
      serial_putc(ch >= 0x20 && ch < 0x7f ? ch : '?');
    }
    serial_putc('\n');
  }
}

void cmdline_parse(struct ctx* c) {
  const char* s = c->cmdline;
  uint32_t n = c->cmdline_len;
  uint32_t i = 0;
  while (i < n) {
    while (i < n && is_space(s[i])) i++;
    uint32_t start = i;
    while (i < n && !is_space(s[i])) i++;
    if (i > start) parse_option(c, s + start, i - start);
  }
}

void check_cmdline(struct ctx* c) {
  if (!c->cmdline_found) {
    check_fail(c, "cmdline", "no NUL-terminated command line at 0x%lx",
               (unsigned long)c->cmdline_addr);
  } else if (c->cmdline_len == 0) {
    check_fail(c, "cmdline", "command line is empty");
  } else if (!c->have_mem) {
    check_fail(c, "cmdline", "no valid rzt.mem=<MiB> option");
  } else if (c->bad_options) {
    check_fail(c, "cmdline", "%u bad rzt.* option(s)", c->bad_options);
  } else {
    check_ok(c, "cmdline", "%u bytes at 0x%lx", c->cmdline_len,
             (unsigned long)c->cmdline_addr);
  }
}
