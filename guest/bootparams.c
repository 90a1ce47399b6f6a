/* Checks of the zero page (struct boot_params) and its E820 table. */
#include "bootparams.h"
#include "guest.h"

/* Where this code actually runs: a RIP-relative address, unlike &symbol,
 * which the non-PIC link resolves to the link-time address. */
static uint64_t runtime_entry64(void) {
  uint64_t a;
  __asm__("lea rz_entry64(%%rip), %0" : "=r"(a));
  return a;
}

void check_zero_page(struct ctx* c) {
  const volatile uint8_t* zp = c->zp;
  const char* w = "zeropage";
  if (!zp) {
    check_fail(c, w, "unusable boot_params pointer 0x%lx in RSI",
               (unsigned long)c->zp_addr);
    return;
  }
  uint16_t flag = ld16(zp + ZP_BOOT_FLAG);
  uint16_t version = ld16(zp + ZP_VERSION);
  uint8_t loader = ld8(zp + ZP_TYPE_OF_LOADER);
  uint64_t load = (uint64_t)(uintptr_t)_image_start;
  uint32_t init_size = (uint32_t)(uintptr_t)rz_init_size;
  uint64_t entry = runtime_entry64();

  if (flag != BOOT_FLAG_MAGIC) {
    check_fail(c, w, "boot_flag is 0x%x, expected 0xaa55", flag);
  } else if (ld32(zp + ZP_HEADER) != HDRS_MAGIC) {
    check_fail(c, w, "header magic is 0x%x, expected HdrS",
               ld32(zp + ZP_HEADER));
  } else if (version < 0x0206) {
    check_fail(c, w, "boot protocol version 0x%x < 0x0206", version);
  } else if (ld8(zp + ZP_SETUP_SECTS) != RZT_SETUP_SECTS) {
    check_fail(c, w, "setup_sects is %u, the image has %u (header not copied?)",
               ld8(zp + ZP_SETUP_SECTS), RZT_SETUP_SECTS);
  } else if (!(ld16(zp + ZP_XLOADFLAGS) & XLF_KERNEL_64)) {
    check_fail(c, w, "xloadflags 0x%x lacks XLF_KERNEL_64",
               ld16(zp + ZP_XLOADFLAGS));
  } else if (!(ld8(zp + ZP_LOADFLAGS) & LOADFLAGS_LOADED_HIGH)) {
    check_fail(c, w, "loadflags 0x%x lacks LOADED_HIGH",
               ld8(zp + ZP_LOADFLAGS));
  } else if (loader == 0) {
    check_fail(c, w, "type_of_loader is 0 (the loader must set it)");
  } else if (ld64(zp + ZP_PREF_ADDRESS) != load) {
    check_fail(c, w, "pref_address 0x%lx, the image has 0x%lx",
               (unsigned long)ld64(zp + ZP_PREF_ADDRESS), (unsigned long)load);
  } else if (ld32(zp + ZP_CODE32_START) != load) {
    check_fail(c, w, "code32_start 0x%x, expected the load address 0x%lx",
               ld32(zp + ZP_CODE32_START), (unsigned long)load);
  } else if (ld32(zp + ZP_INIT_SIZE) != init_size) {
    check_fail(c, w, "init_size 0x%x, the image has 0x%x",
               ld32(zp + ZP_INIT_SIZE), init_size);
  } else if (ld32(zp + ZP_CMD_LINE_PTR) == 0 &&
             ld32(zp + ZP_EXT_CMD_LINE_PTR) == 0) {
    check_fail(c, w, "cmd_line_ptr is 0");
  } else if (ld8(zp + ZP_SENTINEL) != 0) {
    check_fail(c, w, "sentinel (0x1ef) is 0x%x: zero page not cleared",
               ld8(zp + ZP_SENTINEL));
  } else if (entry != load + RZT_ENTRY64_OFFSET) {
    check_fail(c, w, "entered at 0x%lx, expected 0x%lx", (unsigned long)entry,
               (unsigned long)(load + RZT_ENTRY64_OFFSET));
  } else {
    check_ok(c, w, "at 0x%lx, protocol %u.%u, loader 0x%x, entry 0x%lx",
             (unsigned long)c->zp_addr, version >> 8, version & 0xff, loader,
             (unsigned long)entry);
  }
}

struct e820_entry {
  uint64_t addr, size;
  uint32_t type;
};

static struct e820_entry e820_get(const volatile uint8_t* zp, unsigned i) {
  const volatile uint8_t* p = zp + ZP_E820_TABLE + i * E820_ENTRY_SIZE;
  struct e820_entry e = {ld64(p), ld64(p + 8), ld32(p + 16)};
  return e;
}

static unsigned e820_count(const volatile uint8_t* zp) {
  unsigned n = ld8(zp + ZP_E820_ENTRIES);
  return n > ZP_E820_MAX ? ZP_E820_MAX : n;
}

static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

int e820_overlaps_ram(const struct ctx* c, uint64_t addr, uint64_t len) {
  if (!c->zp) return 0;
  unsigned n = e820_count(c->zp);
  for (unsigned i = 0; i < n; i++) {
    struct e820_entry e = e820_get(c->zp, i);
    if (e.type == E820_RAM && overlaps(addr, len, e.addr, e.size)) return 1;
  }
  return 0;
}

int e820_contains(const struct ctx* c, uint64_t addr, uint64_t len) {
  if (!c->zp || addr + len < addr) return 0;
  unsigned n = e820_count(c->zp);
  for (unsigned i = 0; i < n; i++) {
    struct e820_entry e = e820_get(c->zp, i);
    if (e.addr + e.size < e.addr) continue;
    if (addr >= e.addr && addr + len <= e.addr + e.size) return 1;
  }
  return 0;
}

uint64_t e820_entry_end(const struct ctx* c, uint64_t addr) {
  if (!c->zp) return 0;
  unsigned n = e820_count(c->zp);
  for (unsigned i = 0; i < n; i++) {
    struct e820_entry e = e820_get(c->zp, i);
    if (e.addr + e.size < e.addr) continue;
    if (addr >= e.addr && addr < e.addr + e.size) return e.addr + e.size;
  }
  return 0;
}

void check_e820(struct ctx* c) {
  const char* w = "e820";
  if (!c->zp) {
    check_fail(c, w, "no zero page");
    return;
  }
  unsigned n = ld8(c->zp + ZP_E820_ENTRIES);
  if (n == 0 || n > ZP_E820_MAX) {
    check_fail(c, w, "e820_entries is %u (want 1..%u)", n, ZP_E820_MAX);
    return;
  }
  uint64_t usable = 0;
  int ram_at_0 = 0;
  uint64_t load = (uint64_t)(uintptr_t)_image_start;
  uint64_t init_size = (uint64_t)(uintptr_t)rz_init_size;
  int image_in_ram = 0;
  for (unsigned i = 0; i < n; i++) {
    struct e820_entry e = e820_get(c->zp, i);
    say("e820: [0x%lx-0x%lx] type %u", (unsigned long)e.addr,
        (unsigned long)(e.addr + e.size - 1), e.type);
  }
  for (unsigned i = 0; i < n; i++) {
    struct e820_entry e = e820_get(c->zp, i);
    if (e.size == 0 || e.addr + e.size < e.addr) {
      check_fail(c, w, "entry %u has a bad range (0x%lx, size 0x%lx)", i,
                 (unsigned long)e.addr, (unsigned long)e.size);
      return;
    }
    for (unsigned j = 0; j < i; j++) {
      struct e820_entry f = e820_get(c->zp, j);
      if (overlaps(e.addr, e.size, f.addr, f.size)) {
        check_fail(c, w, "entries %u and %u overlap", j, i);
        return;
      }
    }
    if (e.type != E820_RAM) continue;
    if (overlaps(e.addr, e.size, 3 * GIB, 1 * GIB)) {
      check_fail(c, w, "RAM entry %u [0x%lx-0x%lx] reaches into [3 GiB, 4 GiB)",
                 i, (unsigned long)e.addr, (unsigned long)(e.addr + e.size - 1));
      return;
    }
    if (e.addr == 0) ram_at_0 = 1;
    if (load >= e.addr && load + init_size <= e.addr + e.size) image_in_ram = 1;
    usable += e.size;
  }
  if (!ram_at_0) {
    check_fail(c, w, "no RAM entry starts at address 0");
    return;
  }
  if (!image_in_ram) {
    check_fail(c, w, "the kernel's [0x%lx, +0x%lx) is not inside one RAM entry",
               (unsigned long)load, (unsigned long)init_size);
    return;
  }
  if (!c->have_mem) {
    check_fail(c, w, "%lu KiB usable, but no rzt.mem= to compare with",
               (unsigned long)(usable >> 10));
    return;
  }
  uint64_t want = c->mem_mib * MIB;
  uint64_t lo = want > 2 * MIB ? want - 2 * MIB : 0;
  if (usable < lo || usable > want) {
    check_fail(c, w, "%lu KiB usable, expected %lu..%lu KiB (rzt.mem=%lu)",
               (unsigned long)(usable >> 10), (unsigned long)(lo >> 10),
               (unsigned long)(want >> 10), (unsigned long)c->mem_mib);
    return;
  }
  check_ok(c, w, "%u entries, %lu KiB usable of %lu MiB", n,
           (unsigned long)(usable >> 10), (unsigned long)c->mem_mib);
}
