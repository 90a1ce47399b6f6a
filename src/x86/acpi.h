// ACPI tables generated in code: RSDP, XSDT, FADT (+FACS), MADT, DSDT.
#pragma once

#include <cstdint>
#include <vector>

#include "x86/layout.h"

namespace rz::x86 {

struct AcpiConfig {
  uint32_t num_cpus = 1;          // one Processor Local APIC each, APIC ID = index
  uint64_t base = kAcpiBase;      // GPA of the RSDP; the other tables follow it
  bool pvpanic = true;            // DSDT device QEMU0001 at kPvpanicPort
  // PCI root bus (issue 4). When ecam_base is 0 no MCFG / PCI0 is emitted.
  uint64_t ecam_base = 0;
  uint8_t pci_bus_end = 0;
  uint64_t pci_mmio32_start = 0, pci_mmio32_end = 0;   // [start, end)
  uint64_t pci_mmio64_start = 0, pci_mmio64_end = 0;   // [start, end), 0 = none
};

struct AcpiImage {
  uint64_t base = 0;              // GPA where `bytes` must be copied
  uint64_t rsdp_addr = 0;         // == base
  std::vector<uint8_t> bytes;     // all tables, back to back, checksummed
};

// Builds the whole set. Throws rz::Error if it would exceed kAcpiMaxSize.
AcpiImage build_acpi_tables(const AcpiConfig& cfg);

}  // namespace rz::x86
