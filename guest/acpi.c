/* ACPI checks: RSDP, XSDT, every table's checksum, MADT, FADT, DSDT \_S5.
 *
 * Every address and length comes from the VMM and is treated as untrusted:
 * a table is only read once its whole range is known to be memory (inside
 * the BIOS area 0xE0000-0xFFFFF or inside one E820 entry), and every loop
 * is bounded by a length already validated. */
#include "bootparams.h"
#include "guest.h"
#include "io.h"

#define ACPI_HDR_LEN 36
#define ACPI_MAX_TABLE_LEN (256u * 1024)
#define ACPI_MAX_XSDT_ENTRIES 64
#define BIOS_AREA_START 0xe0000ull
#define BIOS_AREA_END 0x100000ull
#define RSDP_V1_LEN 20
#define RSDP_V2_LEN 36

/* FADT field offsets (ACPI 6.x, table 5.9). */
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM1_CNT_LEN 89
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_CNT_BLK 172 /* Generic Address Structure, 12 bytes */
#define FADT_MIN_LEN 116        /* ACPI 1.0 size: covers PM1a_CNT_BLK */
#define GAS_SYSTEM_IO 1

#define MADT_ENTRIES 44
#define MADT_LOCAL_APIC 0
#define MADT_LAPIC_ENABLED 0x1

#define AML_NAME_OP 0x08
#define AML_ROOT_CHAR 0x5c
#define AML_PACKAGE_OP 0x12
#define AML_ZERO_OP 0x00
#define AML_ONE_OP 0x01
#define AML_BYTE_PREFIX 0x0a

static int readable(const struct ctx* c, uint64_t addr, uint64_t len) {
  if (addr == 0 || len == 0 || addr + len < addr) return 0;
  if (addr >= BIOS_AREA_START && addr + len <= BIOS_AREA_END) return 1;
  /* Never read inside the MMIO hole, whatever the E820 says. */
  if (addr + len > 3 * GIB && addr < 4 * GIB) return 0;
  if (addr + len > 4 * GIB) return 0; /* outside the identity map */
  return e820_contains(c, addr, len);
}

static uint8_t checksum(const volatile uint8_t* p, uint32_t n) {
  uint8_t s = 0;
  for (uint32_t i = 0; i < n; i++) s = (uint8_t)(s + p[i]);
  return s;
}

static int sig_is(const volatile uint8_t* p, const char* sig, unsigned n) {
  for (unsigned i = 0; i < n; i++) {
    if (p[i] != (uint8_t)sig[i]) return 0;
  }
  return 1;
}

static void sig_copy(char out[5], const volatile uint8_t* p) {
  for (int i = 0; i < 4; i++) {
    char ch = (char)p[i];
    out[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
  }
  out[4] = '\0';
}

/* The first ACPI table that lies in usable RAM, for the placement check. */
struct placement {
  int bad;
  char what[8];
  uint64_t addr;
};

static void note_placement(const struct ctx* c, struct placement* pl,
                           const char* what, uint64_t addr, uint64_t len) {
  if (pl->bad || !e820_overlaps_ram(c, addr, len)) return;
  pl->bad = 1;
  pl->addr = addr;
  memcpy(pl->what, what, 4); /* a 4-character signature */
  pl->what[4] = '\0';
}

/* Validates a table header + checksum, printing "table XXXX". Returns its
 * length, 0 if it is not usable. `want` may be NULL (any signature). */
static uint32_t check_table(struct ctx* c, uint64_t addr, const char* want,
                            struct placement* pl) {
  char name[16] = "table ";
  if (!readable(c, addr, ACPI_HDR_LEN)) {
    if (want) memcpy(name + 6, want, 5);
    else memcpy(name + 6, "????", 5);
    check_fail(c, name, "header at 0x%lx is not in known memory",
               (unsigned long)addr);
    return 0;
  }
  const volatile uint8_t* t = phys(addr);
  sig_copy(name + 6, t);
  uint32_t len = ld32(t + 4);
  if (want && !sig_is(t, want, 4)) {
    check_fail(c, name, "at 0x%lx: signature is not %s", (unsigned long)addr,
               want);
    return 0;
  }
  if (len < ACPI_HDR_LEN || len > ACPI_MAX_TABLE_LEN ||
      !readable(c, addr, len)) {
    check_fail(c, name, "at 0x%lx: bad length %u", (unsigned long)addr, len);
    return 0;
  }
  uint8_t sum = checksum(t, len);
  if (sum != 0) {
    check_fail(c, name, "at 0x%lx: checksum off by 0x%x", (unsigned long)addr,
               sum);
    return 0;
  }
  check_ok(c, name, "at 0x%lx, %u bytes, revision %u", (unsigned long)addr,
           len, t[8]);
  note_placement(c, pl, name + 6, addr, len);
  return len;
}

static int rsdp_v1_valid(const volatile uint8_t* p) {
  return sig_is(p, "RSD PTR ", 8) && checksum(p, RSDP_V1_LEN) == 0;
}

static uint64_t scan_for_rsdp(void) {
  for (uint64_t a = BIOS_AREA_START; a < BIOS_AREA_END; a += 16) {
    const volatile uint8_t* p = phys(a);
    if (p[0] == 'R' && rsdp_v1_valid(p)) return a;
  }
  return 0;
}

/* Returns the XSDT address, 0 on failure. */
static uint64_t check_rsdp(struct ctx* c, struct placement* pl) {
  const char* w = "rsdp";
  uint64_t addr = c->zp ? ld64(c->zp + ZP_ACPI_RSDP_ADDR) : 0;
  const char* how = "boot_params.acpi_rsdp_addr";
  if (addr == 0) {
    addr = scan_for_rsdp();
    how = "scan of 0xe0000-0xfffff";
    if (addr == 0) {
      check_fail(c, w, "acpi_rsdp_addr is 0 and no RSDP in 0xe0000-0xfffff");
      return 0;
    }
  } else if (!readable(c, addr, RSDP_V2_LEN)) {
    check_fail(c, w, "acpi_rsdp_addr 0x%lx is not in known memory",
               (unsigned long)addr);
    return 0;
  }
  const volatile uint8_t* p = phys(addr);
  if (!sig_is(p, "RSD PTR ", 8)) {
    check_fail(c, w, "no \"RSD PTR \" signature at 0x%lx", (unsigned long)addr);
    return 0;
  }
  if (checksum(p, RSDP_V1_LEN) != 0) {
    check_fail(c, w, "checksum (first 20 bytes) is wrong");
    return 0;
  }
  uint8_t rev = p[15];
  if (rev < 2) {
    check_fail(c, w, "revision %u: no XSDT (need ACPI 2.0+)", rev);
    return 0;
  }
  uint32_t len = ld32(p + 20);
  if (len < RSDP_V2_LEN || len > 4096 || !readable(c, addr, len)) {
    check_fail(c, w, "bad length %u", len);
    return 0;
  }
  if (checksum(p, len) != 0) {
    check_fail(c, w, "extended checksum is wrong");
    return 0;
  }
  uint64_t xsdt = ld64(p + 24);
  if (xsdt == 0) {
    check_fail(c, w, "XsdtAddress is 0");
    return 0;
  }
  char oem[7];
  for (int i = 0; i < 6; i++) {
    char ch = (char)p[9 + i];
    oem[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
  }
  oem[6] = 0;
  check_ok(c, w, "at 0x%lx via %s, revision %u, OEM '%s'",
           (unsigned long)addr, how, rev, oem);
  note_placement(c, pl, "RSDP", addr, len);
  return xsdt;
}

static void check_madt(struct ctx* c, uint64_t addr, uint32_t len) {
  const char* w = "madt";
  const volatile uint8_t* t = phys(addr);
  uint64_t want = c->have_cpus ? c->cpus : 1;
  uint64_t enabled = 0, lapics = 0;
  uint64_t seen_ids[4] = {0, 0, 0, 0};
  uint32_t off = MADT_ENTRIES;
  while (off + 2 <= len) {
    uint8_t type = t[off], elen = t[off + 1];
    if (elen < 2 || off + elen > len) {
      check_fail(c, w, "malformed entry (type %u, length %u) at offset %u",
                 type, elen, off);
      return;
    }
    if (type == MADT_LOCAL_APIC) {
      if (elen < 8) {
        check_fail(c, w, "Local APIC entry of length %u at offset %u", elen,
                   off);
        return;
      }
      uint8_t apic_id = t[off + 3];
      uint32_t flags = ld32(t + off + 4);
      lapics++;
      if (flags & MADT_LAPIC_ENABLED) {
        if (seen_ids[apic_id >> 6] & (1ull << (apic_id & 63))) {
          check_fail(c, w, "APIC ID %u listed twice", apic_id);
          return;
        }
        seen_ids[apic_id >> 6] |= 1ull << (apic_id & 63);
        enabled++;
      }
    }
    off += elen;
  }
  if (enabled != want) {
    check_fail(c, w, "%lu enabled Local APIC entries (%lu in all), expected %lu",
               (unsigned long)enabled, (unsigned long)lapics,
               (unsigned long)want);
    return;
  }
  check_ok(c, w, "%lu enabled CPUs, expected %lu%s", (unsigned long)enabled,
           (unsigned long)want, c->have_cpus ? "" : " (default)");
}

/* Returns the DSDT address (0 if none). */
static uint64_t check_fadt(struct ctx* c, uint64_t addr, uint32_t len) {
  const char* w = "fadt";
  const volatile uint8_t* t = phys(addr);
  if (len < FADT_MIN_LEN) {
    check_fail(c, w, "only %u bytes long", len);
    return 0;
  }
  uint64_t dsdt = ld32(t + FADT_DSDT);
  if (len >= FADT_X_DSDT + 8 && ld64(t + FADT_X_DSDT) != 0) {
    dsdt = ld64(t + FADT_X_DSDT);
  }
  uint64_t facs = ld32(t + FADT_FIRMWARE_CTRL);
  if (len >= FADT_X_FIRMWARE_CTRL + 8 && ld64(t + FADT_X_FIRMWARE_CTRL) != 0) {
    facs = ld64(t + FADT_X_FIRMWARE_CTRL);
  }
  uint64_t pm1a = ld32(t + FADT_PM1A_CNT_BLK);
  if (pm1a == 0 && len >= FADT_X_PM1A_CNT_BLK + 12 &&
      t[FADT_X_PM1A_CNT_BLK] == GAS_SYSTEM_IO) {
    pm1a = ld64(t + FADT_X_PM1A_CNT_BLK + 4);
  }
  uint8_t cnt_len = t[FADT_PM1_CNT_LEN];
  if (pm1a == 0 || pm1a > 0xfffe) {
    check_fail(c, w, "no usable PM1a_CNT_BLK (0x%lx)", (unsigned long)pm1a);
  } else if (cnt_len < 2) {
    check_fail(c, w, "PM1_CNT_LEN is %u, expected >= 2", cnt_len);
  } else if (dsdt == 0) {
    check_fail(c, w, "no DSDT address");
  } else if (facs != 0 && !(readable(c, facs, 64) && sig_is(phys(facs), "FACS", 4))) {
    check_fail(c, w, "FIRMWARE_CTRL 0x%lx does not point at a FACS",
               (unsigned long)facs);
  } else {
    c->have_pm1a_cnt = 1;
    c->pm1a_cnt = (uint16_t)pm1a;
    check_ok(c, w, "PM1a_CNT_BLK 0x%x, DSDT at 0x%lx", c->pm1a_cnt,
             (unsigned long)dsdt);
  }
  return dsdt; /* checked on its own even when the FADT failed */
}

static void check_s5(struct ctx* c, uint64_t addr, uint32_t len) {
  const char* w = "dsdt _S5";
  const volatile uint8_t* t = phys(addr);
  for (uint32_t i = ACPI_HDR_LEN; i + 4 <= len; i++) {
    if (t[i] != '_' || t[i + 1] != 'S' || t[i + 2] != '5' || t[i + 3] != '_')
      continue;
    /* Only a declaration counts: NameOp, optionally with a root prefix. */
    int named = (i >= 1 && t[i - 1] == AML_NAME_OP) ||
                (i >= 2 && t[i - 1] == AML_ROOT_CHAR && t[i - 2] == AML_NAME_OP);
    if (!named) continue;
    uint32_t j = i + 4;
    if (j + 2 > len || t[j] != AML_PACKAGE_OP) {
      check_fail(c, w, "_S5_ at offset %u is not followed by a Package", i);
      return;
    }
    uint32_t pkglen_bytes = 1 + (t[j + 1] >> 6);
    uint32_t num = j + 1 + pkglen_bytes; /* NumElements */
    if (num + 2 > len) {
      check_fail(c, w, "_S5_ package runs past the table end");
      return;
    }
    if (t[num] == 0) {
      check_fail(c, w, "_S5_ package has no elements");
      return;
    }
    uint32_t e = num + 1;
    uint8_t op = t[e];
    uint8_t v;
    if (op == AML_BYTE_PREFIX) {
      if (e + 2 > len) {
        check_fail(c, w, "_S5_ BytePrefix runs past the table end");
        return;
      }
      v = t[e + 1];
    } else if (op == AML_ZERO_OP) {
      v = 0;
    } else if (op == AML_ONE_OP) {
      v = 1;
    } else {
      check_fail(c, w, "first _S5_ element has unsupported encoding 0x%x", op);
      return;
    }
    if (v > 7) {
      check_fail(c, w, "SLP_TYP %u does not fit in 3 bits", v);
      return;
    }
    c->have_slp_typ = 1;
    c->slp_typ_s5 = v;
    check_ok(c, w, "SLP_TYP %u at offset %u", v, i);
    return;
  }
  check_fail(c, w, "no Name(_S5_, Package) in the DSDT");
}

void check_acpi(struct ctx* c) {
  struct placement pl = {0, {0}, 0};
  uint64_t xsdt = check_rsdp(c, &pl);
  if (!xsdt) return;
  uint32_t xlen = check_table(c, xsdt, "XSDT", &pl);
  if (!xlen) return;
  uint32_t n = (xlen - ACPI_HDR_LEN) / 8;
  if ((xlen - ACPI_HDR_LEN) % 8 != 0 || n == 0 || n > ACPI_MAX_XSDT_ENTRIES) {
    check_fail(c, "xsdt", "length %u holds no whole list of 1..%u entries",
               xlen, ACPI_MAX_XSDT_ENTRIES);
    return;
  }
  const volatile uint8_t* x = phys(xsdt);
  uint64_t madt = 0, fadt = 0;
  uint32_t madt_len = 0, fadt_len = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t a = ld64(x + ACPI_HDR_LEN + 8 * i);
    uint32_t len = check_table(c, a, NULL, &pl);
    if (!len) continue;
    const volatile uint8_t* t = phys(a);
    if (!madt && sig_is(t, "APIC", 4)) madt = a, madt_len = len;
    if (!fadt && sig_is(t, "FACP", 4)) fadt = a, fadt_len = len;
  }
  check_ok(c, "xsdt", "%u entries", n);

  if (madt) {
    check_madt(c, madt, madt_len);
  } else {
    check_fail(c, "madt", "no valid APIC table in the XSDT");
  }
  if (!fadt) {
    check_fail(c, "fadt", "no valid FACP table in the XSDT");
    check_fail(c, "dsdt _S5", "no FADT, so no DSDT");
  } else {
    uint64_t dsdt = check_fadt(c, fadt, fadt_len);
    uint32_t dlen = dsdt ? check_table(c, dsdt, "DSDT", &pl) : 0;
    if (dlen) {
      check_s5(c, dsdt, dlen);
    } else {
      check_fail(c, "dsdt _S5", "no valid DSDT");
    }
  }
  if (pl.bad) {
    check_fail(c, "acpi placement", "%s at 0x%lx lies in usable (type 1) RAM",
               pl.what, (unsigned long)pl.addr);
  } else {
    check_ok(c, "acpi placement", "no table in usable RAM");
  }
}
