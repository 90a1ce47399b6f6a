// ACPI tables of a ringzero x86-64 machine (ACPI 6.3 layouts).
//
// The image starts with the RSDP at cfg.base; the tables follow it, each
// 16-byte aligned (the FACS 64-byte aligned):
//   RSDP -> XSDT -> { FADT -> { FACS, DSDT }, MADT, MCFG (with PCI) }
// There is no RSDT: the RSDP is revision 2 and OSes use the XSDT.
#include "x86/acpi.h"

#include <algorithm>
#include <string>
#include <string_view>

#include "util/error.h"
#include "x86/aml.h"

namespace rz::x86 {
namespace {

using aml::Bytes;

constexpr std::string_view kOemId = "RINGZ0";        // 6 characters
constexpr std::string_view kOemTableId = "RINGZERO"; // 8 characters
constexpr std::string_view kCreatorId = "RZ  ";      // 4 characters
constexpr uint32_t kOemRevision = 1, kCreatorRevision = 1;
constexpr size_t kHeaderSize = 36, kRsdpSize = 36, kFacsSize = 64;
constexpr uint32_t kMaxCpus = 254;  // 8-bit APIC IDs; 0xff is the broadcast ID

// Generic Address Structure: address space IDs and access sizes.
constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kAccessByte = 1, kAccessWord = 2;

// FADT flags and IA-PC boot architecture flags.
constexpr uint32_t kFadtWbinvd = 1u << 0, kFadtProcC1 = 1u << 2, kFadtPwrButton = 1u << 4,
                   kFadtSlpButton = 1u << 5, kFadtResetRegSup = 1u << 10;
constexpr uint16_t kBootLegacyDevices = 1u << 0, kBoot8042 = 1u << 1, kBootNoVga = 1u << 2;

// MADT structure types.
constexpr uint8_t kMadtLocalApic = 0, kMadtIoApic = 1, kMadtIntSrcOverride = 2,
                  kMadtLocalApicNmi = 4;
constexpr uint16_t kMpsActiveHigh = 0x1, kMpsLevel = 0x3 << 2;

// Little-endian byte writer.
class Writer {
 public:
  Writer& u8(uint64_t v) { return put(v, 1); }
  Writer& u16(uint64_t v) { return put(v, 2); }
  Writer& u32(uint64_t v) { return put(v, 4); }
  Writer& u64(uint64_t v) { return put(v, 8); }
  Writer& zeros(size_t n) {
    out.insert(out.end(), n, 0);
    return *this;
  }
  Writer& text(std::string_view s) {
    out.insert(out.end(), s.begin(), s.end());
    return *this;
  }
  Writer& bytes(const Bytes& b) {
    out.insert(out.end(), b.begin(), b.end());
    return *this;
  }
  // Generic Address Structure (12 bytes) for a System I/O register.
  Writer& io_gas(uint16_t port, uint8_t bit_width, uint8_t access_size) {
    return u8(kGasSystemIo).u8(bit_width).u8(0).u8(access_size).u64(port);
  }
  Bytes out;

 private:
  Writer& put(uint64_t v, int size) {
    for (int i = 0; i < size; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
};

// The value that makes bytes [from, from + n) of `b` sum to 0 (mod 256).
uint8_t checksum(const Bytes& b, size_t from, size_t n) {
  uint8_t sum = 0;
  for (size_t i = from; i < from + n; ++i) sum = static_cast<uint8_t>(sum + b[i]);
  return static_cast<uint8_t>(-sum);
}

// A System Description Table: the 36-byte header, then `body`.
Bytes table(std::string_view signature, uint8_t revision, const Bytes& body) {
  Writer w;
  w.text(signature).u32(kHeaderSize + body.size()).u8(revision).u8(0 /* checksum */);
  w.text(kOemId).text(kOemTableId).u32(kOemRevision).text(kCreatorId).u32(kCreatorRevision);
  w.bytes(body);
  w.out[9] = checksum(w.out, 0, w.out.size());
  return std::move(w.out);
}

// A 32-bit table pointer field: the address, or 0 when only the 64-bit field can hold it.
uint64_t lo32(uint64_t addr) { return addr <= 0xffffffffu ? addr : 0; }

Bytes fadt_body(const AcpiConfig& cfg, uint64_t facs, uint64_t dsdt) {
  uint32_t flags = kFadtWbinvd | kFadtProcC1 | kFadtSlpButton | kFadtResetRegSup;
  if (!cfg.fixed_power_button) flags |= kFadtPwrButton;
  Writer w;                                   // offset in the table:
  w.u32(lo32(facs)).u32(lo32(dsdt));          // 36 FIRMWARE_CTRL, 40 DSDT
  w.u8(0).u8(0);                              // 44 reserved, 45 preferred PM profile: unspecified
  w.u16(kAcpiSciIrq);                         // 46 SCI_INT
  w.u32(0).u8(0).u8(0);                       // 48 SMI_CMD 0: always in ACPI mode; ACPI_ENABLE/DISABLE
  w.u8(0).u8(0);                              // 54 S4BIOS_REQ, PSTATE_CNT
  w.u32(kAcpiPm1aEvtPort).u32(0);             // 56 PM1a_EVT_BLK, 60 PM1b_EVT_BLK
  w.u32(kAcpiPm1aCntPort).u32(0);             // 64 PM1a_CNT_BLK, 68 PM1b_CNT_BLK
  w.u32(0).u32(0).u32(0).u32(0);              // 72 PM2_CNT, 76 PM_TMR, 80 GPE0, 84 GPE1: none
  w.u8(4).u8(2);                              // 88 PM1_EVT_LEN, 89 PM1_CNT_LEN
  w.zeros(6);                                 // 90 PM2_CNT_LEN .. 95 CST_CNT
  w.u16(101).u16(1001);                       // 96 P_LVL2_LAT, 98 P_LVL3_LAT: no C2, no C3
  w.u16(0).u16(0).u8(0).u8(0);                // 100 FLUSH_SIZE/STRIDE, 104 DUTY_OFFSET/WIDTH
  w.u8(0).u8(0).u8(0);                        // 106 DAY_ALRM, MON_ALRM, CENTURY: none
  w.u16(kBootLegacyDevices | kBoot8042 | kBootNoVga);  // 109 IAPC_BOOT_ARCH
  w.u8(0);                                    // 111 reserved
  w.u32(flags);                               // 112 Flags
  w.io_gas(kAcpiResetPort, 8, kAccessByte);   // 116 RESET_REG
  w.u8(kAcpiResetValue);                      // 128 RESET_VALUE
  w.u16(0).u8(3);                             // 129 ARM_BOOT_ARCH, 131 FADT minor version (6.3)
  w.u64(facs).u64(dsdt);                      // 132 X_FIRMWARE_CTRL, 140 X_DSDT
  w.io_gas(kAcpiPm1aEvtPort, 32, kAccessWord);  // 148 X_PM1a_EVT_BLK
  w.zeros(12);                                // 160 X_PM1b_EVT_BLK
  w.io_gas(kAcpiPm1aCntPort, 16, kAccessWord);  // 172 X_PM1a_CNT_BLK
  w.zeros(12 * 7);                            // 184 X_PM1b_CNT .. 256 SLEEP_STATUS_REG
  w.text("RINGZERO");                         // 268 hypervisor vendor identity
  return std::move(w.out);                    // 276 bytes with the header
}

Bytes facs_table() {
  Writer w;
  w.text("FACS").u32(kFacsSize).u32(0 /* hardware signature */);
  w.u32(0).u32(0).u32(0).u64(0);              // waking vector, global lock, flags, X waking vector
  w.u8(2).zeros(3).u32(0).zeros(24);          // version 2, OSPM flags
  return std::move(w.out);
}

Bytes madt_body(const AcpiConfig& cfg) {
  Writer w;
  w.u32(kLapicAddr).u32(1 /* PCAT_COMPAT: dual 8259s present */);
  for (uint32_t i = 0; i < cfg.num_cpus; ++i)  // ACPI processor UID = APIC ID = index, enabled
    w.u8(kMadtLocalApic).u8(8).u8(i).u8(i).u32(1);
  // The I/O APIC's ID comes after the CPUs' so the two never share one.
  w.u8(kMadtIoApic).u8(12).u8(cfg.num_cpus).u8(0).u32(kIoapicAddr).u32(0 /* GSI base */);
  // The PIT's ISA IRQ 0 is wired to pin 2 (pin 0 is the 8259's ExtINT).
  w.u8(kMadtIntSrcOverride).u8(10).u8(0 /* ISA */).u8(0).u32(2).u16(0 /* conforming */);
  // The SCI is level-triggered, active-high.
  w.u8(kMadtIntSrcOverride).u8(10).u8(0).u8(kAcpiSciIrq).u32(kAcpiSciIrq)
      .u16(kMpsActiveHigh | kMpsLevel);
  // NMI arrives on LINT1 of every processor.
  w.u8(kMadtLocalApicNmi).u8(6).u8(0xff).u16(0 /* conforming */).u8(1);
  return std::move(w.out);
}

uint64_t ecam_size(const AcpiConfig& cfg) { return (uint64_t{cfg.pci_bus_end} + 1) << 20; }

Bytes mcfg_body(const AcpiConfig& cfg) {
  Writer w;
  w.zeros(8);
  w.u64(cfg.ecam_base).u16(0 /* segment */).u8(0 /* first bus */).u8(cfg.pci_bus_end).u32(0);
  return std::move(w.out);
}

// \_SB.PCI0: the PCI Express root bridge of segment 0 and its bus-0 INTx routing.
Bytes pci_root_device(const AcpiConfig& cfg) {
  using namespace aml;
  ResourceTemplate crs;
  crs.word_bus_number(0, cfg.pci_bus_end)
      .io(0xcf8, 0xcf8, 1, 8)             // the config address/data ports
      .word_io(0x1000, 0xffff);           // I/O BARs
  if (cfg.pci_mmio32_end > cfg.pci_mmio32_start)
    crs.dword_memory(static_cast<uint32_t>(cfg.pci_mmio32_start),
                     static_cast<uint32_t>(cfg.pci_mmio32_end - 1), Cache::NonCacheable);
  if (cfg.pci_mmio64_end > cfg.pci_mmio64_start)
    crs.qword_memory(cfg.pci_mmio64_start, cfg.pci_mmio64_end - 1, Cache::Cacheable);

  // _PRT entries: {address 0xSSSSFFFF (any function of slot S), pin, source 0
  // (a GSI, hence level-triggered active-low), GSI}.
  TermList prt;
  for (uint8_t slot = 0; slot < 32; ++slot)
    for (uint8_t pin = 0; pin < 4; ++pin)
      prt.push_back(package({integer(uint64_t{slot} << 16 | 0xffff), integer(pin), integer(0),
                             integer(pci_intx_gsi(slot, pin))}));

  return device("PCI0", {
      name("_HID", eisa_id("PNP0A08")),
      name("_CID", eisa_id("PNP0A03")),
      name("_SEG", integer(0)),
      name("_BBN", integer(0)),
      name("_UID", integer(0)),
      name("_CRS", crs.build()),
      name("_PRT", package(prt)),
  });
}

Bytes dsdt_body(const AcpiConfig& cfg) {
  using namespace aml;
  TermList sb;
  if (cfg.ecam_base != 0) {
    sb.push_back(pci_root_device(cfg));
    // Motherboard resources: the OS checks that the MCFG's ECAM range is reserved here.
    sb.push_back(device("MRES", {
        name("_HID", eisa_id("PNP0C02")),
        name("_UID", integer(0)),
        name("_CRS", ResourceTemplate()
                         .memory32_fixed(static_cast<uint32_t>(cfg.ecam_base),
                                         static_cast<uint32_t>(ecam_size(cfg)))
                         .build()),
    }));
  }
  sb.push_back(device("COM1", {
      name("_HID", eisa_id("PNP0501")),
      name("_UID", integer(1)),
      name("_STA", integer(0x0f)),
      name("_CRS", ResourceTemplate().io(kCom1Port, kCom1Port, 0, 8).irq_no_flags({kCom1Irq}).build()),
  }));
  if (cfg.pvpanic) {
    sb.push_back(device("PEVT", {
        name("_HID", string("QEMU0001")),
        name("_STA", integer(0x0f)),
        name("_CRS", ResourceTemplate().io(kPvpanicPort, kPvpanicPort, 1, 1).build()),
    }));
  }
  Bytes out = scope("\\_SB", sb);
  // Sleep state S5 (soft off): SLP_TYP for PM1a_CNT and PM1b_CNT.
  Bytes s5 = name("_S5", package({integer(kSlpTypS5), integer(kSlpTypS5), integer(0), integer(0)}));
  out.insert(out.end(), s5.begin(), s5.end());
  return out;
}

void validate(const AcpiConfig& cfg) {
  auto fail = [](const std::string& what) { throw rz::Error("ACPI tables: " + what); };
  if (cfg.num_cpus < 1 || cfg.num_cpus > kMaxCpus)
    fail("num_cpus must be 1.." + std::to_string(kMaxCpus) + ", got " + std::to_string(cfg.num_cpus));
  if (cfg.base % 16 != 0) fail("the RSDP address must be 16-byte aligned");
  if (cfg.ecam_base == 0) return;
  if (cfg.ecam_base % (1 << 20) != 0) fail("the ECAM base must be 1 MiB aligned");
  if (cfg.ecam_base + ecam_size(cfg) > (uint64_t{1} << 32)) fail("the ECAM range must end below 4 GiB");
  if (cfg.pci_mmio32_start > cfg.pci_mmio32_end || cfg.pci_mmio32_end > (uint64_t{1} << 32))
    fail("bad 32-bit PCI MMIO window");
  if (cfg.pci_mmio64_start > cfg.pci_mmio64_end) fail("bad 64-bit PCI MMIO window");
}

}  // namespace

AcpiImage build_acpi_tables(const AcpiConfig& cfg) {
  validate(cfg);
  AcpiImage img;
  img.base = img.rsdp_addr = cfg.base;
  Bytes& out = img.bytes;
  out.resize(kRsdpSize);  // filled in last

  // Appends `t` at the next `align`-aligned guest address; returns that address.
  auto place = [&](const Bytes& t, uint64_t align) {
    uint64_t addr = (cfg.base + out.size() + align - 1) / align * align;
    out.resize(addr - cfg.base);
    out.insert(out.end(), t.begin(), t.end());
    return addr;
  };
  uint64_t dsdt = place(table("DSDT", 2, dsdt_body(cfg)), 16);
  uint64_t facs = place(facs_table(), 64);
  Writer xsdt;
  xsdt.u64(place(table("FACP", 6, fadt_body(cfg, facs, dsdt)), 16));
  xsdt.u64(place(table("APIC", 5, madt_body(cfg)), 16));
  if (cfg.ecam_base != 0) xsdt.u64(place(table("MCFG", 1, mcfg_body(cfg)), 16));
  uint64_t xsdt_addr = place(table("XSDT", 1, xsdt.out), 16);

  Writer rsdp;
  rsdp.text("RSD PTR ").u8(0 /* checksum */).text(kOemId).u8(2 /* revision */);
  rsdp.u32(0 /* no RSDT */).u32(kRsdpSize).u64(xsdt_addr).u8(0 /* extended checksum */).zeros(3);
  rsdp.out[8] = checksum(rsdp.out, 0, 20);
  rsdp.out[32] = checksum(rsdp.out, 0, kRsdpSize);
  std::copy(rsdp.out.begin(), rsdp.out.end(), out.begin());

  if (out.size() > kAcpiMaxSize)
    throw rz::Error("ACPI tables: " + std::to_string(out.size()) + " bytes exceed the " +
                    std::to_string(kAcpiMaxSize) + "-byte area");
  return img;
}

}  // namespace rz::x86
